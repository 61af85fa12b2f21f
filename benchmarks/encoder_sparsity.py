"""Benchmark: the sparse image encoder (``--encoder-sparsity``) vs stock and pruned SAM2 on CPU.

Not a test. Random-weight SAM2.1 hiera-t (costs are real; masks, and therefore the
object prior, are not, and drift magnitudes of random weights say little about
trained ones). Two synthetic videos, one object each:

* ``static``: a disc moving over a static textured background (a fixed camera);
* ``camera``: the same disc over a background that pans a few tokens per frame
  (global change: every token moves, the mode must fall back to full frames).

Per video three runs of the same weights: ``stock`` (keep 1.0, stock encoder),
``pruned`` (keep ``--keep-ratio``, stock encoder) and ``sparse`` (keep
``--keep-ratio``, sparse encoder). Reported per run: amortised ms per frame (all
frames, from building the state and prompting to the last frame, divided by the
number of frames), per-frame ms, image-encoder ms, GFLOPs per frame (every frame,
``torch.utils.flop_counter`` around each component; the counter runs in every
run, so its small overhead is in every wall time alike), and for ``sparse`` the
share of encoder tokens recomputed (summed over blocks and frames), which frames
were full and why, and the drift of the encoder features against a full
recompute of the same frame (mean cosine distance over the stride-16 features,
per frame; the reference is computed outside the timers).

    python benchmarks/encoder_sparsity.py [--image-size 1024] [--frames 12] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from fastsam2 import preprocess
from fastsam2.models.factory import load_sam2
from fastsam2.tracking.memory_bank import evict_unreachable
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET, STATS_KEY
from fastsam2.tracking.sparse_encoder import EncoderSparsityConfig

SAM2_MEAN = torch.tensor(preprocess.SAM2_MEAN).view(3, 1, 1)
SAM2_STD = torch.tensor(preprocess.SAM2_STD).view(3, 1, 1)


class MovingDiscVideo:
    """A red disc moving right over a textured background, SAM2-normalised frames [3, S, S].

    ``pan`` > 0 moves the camera: the background slides left by ``pan`` pixels a frame.
    """

    def __init__(self, size: int, num_frames: int, pan: int = 0, seed: int = 0) -> None:
        self.size, self.num_frames, self.pan = size, num_frames, pan
        g = torch.Generator().manual_seed(seed)
        width = size + pan * num_frames
        tex = torch.zeros(3, size, width)
        for cells, weight in ((8, 0.5), (32, 0.3), (128, 0.2)):  # coarse to fine texture
            low = torch.rand(1, 3, cells, max(1, cells * width // size), generator=g)
            tex += weight * F.interpolate(low, size=(size, width), mode="bicubic", align_corners=False)[0]
        self.texture = tex.clamp(0, 1)
        self.radius = 0.08 * size
        self.step = 0.012 * size
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.yy, self.xx = yy.float(), xx.float()

    def center(self, t: int) -> tuple[float, float]:
        return self.size * 0.3 + self.step * t, self.size * 0.5

    def box(self, t: int) -> list[float]:
        cx, cy = self.center(t)
        r = self.radius
        return [cx - r, cy - r, cx + r, cy + r]

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, t: int) -> torch.Tensor:
        img = self.texture[:, :, t * self.pan: t * self.pan + self.size].clone()
        cx, cy = self.center(t)
        disc = (self.xx - cx) ** 2 + (self.yy - cy) ** 2 < self.radius**2
        img[:, disc] = torch.tensor([0.9, 0.1, 0.1])[:, None]
        return (img - SAM2_MEAN) / SAM2_STD


def oracle_prior(video: MovingDiscVideo, grid: int, dilation: int):
    """Object prior from the synthetic ground truth: the disc on the previous frame, on the
    SAM token grid, dilated. A stand-in for the masks of trained weights (random-weight masks
    cover most of the frame, so the model's own prior would select nearly everything)."""

    def prior(_state, frame_idx: int) -> torch.Tensor | None:
        if frame_idx == 0:
            return None
        cx, cy = video.center(frame_idx - 1)
        disc = ((video.xx - cx) ** 2 + (video.yy - cy) ** 2 < video.radius**2).float()[None, None]
        tok = F.adaptive_max_pool2d(disc, (grid, grid))
        if dilation:
            tok = F.max_pool2d(tok, 2 * dilation + 1, stride=1, padding=dilation)
        return tok[0, 0] > 0

    return prior


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over positions of 1 - cos between channel vectors ([1, C, H, W])."""
    return float((1.0 - F.cosine_similarity(a.float(), b.float(), dim=1)).mean())


@torch.inference_mode()
def run(predictor, video: MovingDiscVideo, keep: float, sparsity: EncoderSparsityConfig | None,
        prior: str = "model") -> dict[str, Any]:
    from fastsam2.tracking.streaming import new_inference_state

    predictor.configure_pruning(keep_ratio=keep, count_flops=True)
    predictor.configure_encoder_sparsity(sparsity)
    predictor.__dict__.pop("_encoder_prior", None)
    if sparsity is not None and prior == "oracle":  # test double for trained weights' masks
        predictor._encoder_prior = oracle_prior(video, predictor.sam_image_embedding_size, sparsity.object_dilation)
    size = video.size
    frames: list[dict[str, Any]] = []
    start = t0 = time.perf_counter()
    state = new_inference_state(predictor, video, size, size, first_frame=0)
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=video.box(0))
    excluded = 0.0
    for f, _, _ in predictor.propagate_in_video(state):
        wall = (time.perf_counter() - t0) * 1000.0
        stats = dict(state[STATS_KEY].pop(f, {}) or {})
        rec: dict[str, Any] = {
            "frame": f,
            "ms": round(wall, 1),
            "ms_image_encoder": round(stats.get("ms_image_encoder", 0.0), 1),
            "gflops": round(sum(v for k, v in stats.items() if k.startswith("gflops_")), 2),
            "gflops_image_encoder": round(stats.get("gflops_image_encoder", 0.0), 2),
        }
        if sparsity is not None:
            t_ref = time.perf_counter()
            if stats.get("encoder_full"):  # a full frame is the stock encoder bit for bit (tested)
                rec["drift"], rec["drift_fpn"] = 0.0, None
            else:
                image, sparse_out = state["cached_features"][f]
                dense_out = predictor.forward_image(image)  # outside a frame context: the stock encoder
                predictor._taps = None
                rec["drift"] = round(cosine_distance(sparse_out["vision_features"], dense_out["vision_features"]), 6)
                rec["drift_fpn"] = [round(cosine_distance(a, b), 6) for a, b in
                                    zip(sparse_out["backbone_fpn"], dense_out["backbone_fpn"], strict=True)]
            rec["encoder_full"] = stats.get("encoder_full")
            rec["encoder_reason"] = stats.get("encoder_reason")
            rec["tokens_recomputed"] = stats.get("encoder_tokens_recomputed", 0)
            rec["tokens_total"] = stats.get("encoder_tokens_total", 0)
            excluded += time.perf_counter() - t_ref
        evict_unreachable(predictor, state, f)
        frames.append(rec)
        t0 = time.perf_counter()
    total_ms = (time.perf_counter() - start - excluded) * 1000.0
    n = len(frames)
    out: dict[str, Any] = {
        "amortised_ms_per_frame": round(total_ms / n, 1),
        "median_ms_per_frame": round(statistics.median(r["ms"] for r in frames), 1),
        "encoder_ms_per_frame": round(statistics.mean(r["ms_image_encoder"] for r in frames), 1),
        "gflops_per_frame": round(statistics.mean(r["gflops"] for r in frames), 2),
        "encoder_gflops_per_frame": round(statistics.mean(r["gflops_image_encoder"] for r in frames), 2),
    }
    if sparsity is not None:
        out["recompute_fraction"] = round(sum(r["tokens_recomputed"] for r in frames)
                                          / max(1, sum(r["tokens_total"] for r in frames)), 4)
        out["full_frames"] = {r["frame"]: r["encoder_reason"] for r in frames if r["encoder_full"]}
        out["drift_mean"] = round(statistics.mean(r["drift"] for r in frames), 6)
        out["drift_per_frame"] = [r["drift"] for r in frames]
        out["recompute_fraction_per_frame"] = [round(r["tokens_recomputed"] / max(1, r["tokens_total"]), 4)
                                               for r in frames]
    out["frames"] = frames
    return out


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ratios between the runs present (``x/y``: x's cost over y's; ``speedup``: y's time over x's)."""
    out: dict[str, Any] = {}
    pairs = [("sparse", "stock"), ("pruned", "stock"), ("sparse", "pruned")]
    for a, b in pairs:
        if a in runs and b in runs:
            ra, rb = runs[a], runs[b]
            out[f"speedup_{a}_vs_{b}"] = round(rb["amortised_ms_per_frame"] / ra["amortised_ms_per_frame"], 3)
            out[f"encoder_time_{a}/{b}"] = round(ra["encoder_ms_per_frame"] / rb["encoder_ms_per_frame"], 3)
            out[f"encoder_gflops_{a}/{b}"] = round(ra["encoder_gflops_per_frame"] / rb["encoder_gflops_per_frame"], 3)
            out[f"gflops_{a}/{b}"] = round(ra["gflops_per_frame"] / rb["gflops_per_frame"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--keep-ratio", type=float, default=0.3)
    ap.add_argument("--encoder-sparsity", default="both", choices=["temporal", "object", "both"])
    ap.add_argument("--encoder-refresh", type=int, default=8)
    ap.add_argument("--encoder-threshold", type=float, default=0.1)
    ap.add_argument("--videos", nargs="+", default=["static", "camera"], choices=["static", "camera"])
    ap.add_argument("--pan", type=int, default=None, help="camera pan in px per frame (default: 2%% of the image)")
    ap.add_argument("--prior", default="oracle", choices=["oracle", "model"],
                    help="object prior of the sparse encoder: the synthetic ground truth's previous disc "
                         "(oracle: stands in for trained weights) or the random-weight model's own masks")
    ap.add_argument("--runs", default="static:stock,static:pruned,static:sparse,camera:stock,camera:pruned,camera:sparse",
                    help="comma-separated VIDEO:RUN pairs (runs: stock, pruned, sparse); a video without a "
                         "stock run borrows another video's (stock costs do not depend on content)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.image_size
    sparsity = EncoderSparsityConfig(args.encoder_sparsity, args.encoder_refresh, args.encoder_threshold)
    predictor = load_sam2("sam2.1_hiera_t", image_size=size, device="cpu", random_weights=True,
                                      predictor_target=PREDICTOR_TARGET).model
    pan = args.pan if args.pan is not None else max(1, round(0.02 * size))
    with torch.inference_mode():  # warm-up (allocator, kernels), so no run pays first-call costs
        predictor.forward_image(MovingDiscVideo(size, 1)[0][None])
    result: dict[str, Any] = {
        "weights": "RANDOM (SAM2.1 hiera-t, seed 0): costs are real; masks, object prior and drift "
                   "magnitudes are not those of trained weights",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "image_size": size,
        "frames": args.frames,
        "keep_ratio": args.keep_ratio,
        "object_prior": args.prior if sparsity.object else None,
        "encoder_sparsity": {"mode": sparsity.mode, "refresh": sparsity.refresh, "threshold": sparsity.threshold,
                             "scene_cut_fraction": sparsity.scene_cut_fraction,
                             "dense_fraction": sparsity.dense_fraction, "object_dilation": sparsity.object_dilation},
        "videos": {},
    }
    stock_run = None
    wanted = {r.strip() for r in args.runs.split(",") if r.strip()}
    for name in args.videos:
        video = MovingDiscVideo(size, args.frames, pan=pan if name == "camera" else 0)
        runs: dict[str, Any] = {}
        if f"{name}:stock" in wanted:
            stock_run = runs["stock"] = run(predictor, video, 1.0, None)
        elif stock_run is not None:
            runs["stock"] = {**stock_run, "note": "borrowed from another video's stock run (dense: same costs)"}
        if f"{name}:pruned" in wanted:
            runs["pruned"] = run(predictor, video, args.keep_ratio, None)
        if f"{name}:sparse" in wanted:
            runs["sparse"] = run(predictor, video, args.keep_ratio, sparsity, args.prior)
        entry: dict[str, Any] = {"pan_px_per_frame": video.pan, **runs, "summary": compare(runs)}
        s = entry["summary"]
        targets: dict[str, bool] = {}
        if name == "static":
            if "speedup_sparse_vs_stock" in s:
                targets["speedup_sparse_vs_stock>=3.0"] = s["speedup_sparse_vs_stock"] >= 3.0
                targets["encoder_gflops_sparse/stock<=0.5"] = s["encoder_gflops_sparse/stock"] <= 0.5
        else:
            if "sparse" in runs:
                targets["recompute_fraction>=0.9"] = runs["sparse"]["recompute_fraction"] >= 0.9
            if "speedup_sparse_vs_pruned" in s:
                targets["sparse_not_slower_than_off_by_5%"] = 1.0 / s["speedup_sparse_vs_pruned"] <= 1.05
        entry["targets"] = targets
        result["videos"][name] = entry
        print(json.dumps({name: {"summary": s, "targets": entry["targets"]}}), flush=True)
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
