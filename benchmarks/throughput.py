"""Benchmark: tracked frames per second and peak memory, stock SAM2 vs. our tracking engine.

Not a test. SAM2.1 hiera-t with RANDOM weights (masks are meaningless, costs are
real) on synthetic videos of moving discs (``fastsam2.synthetic``), every mode on
the same videos, same weights, same device, one process:

- ``stock``: SAM2 as its README shows a user running it, video by video:
  ``init_state`` (loads every frame) + ``add_new_points_or_box`` +
  ``propagate_in_video``, under ``torch.autocast("cuda", dtype=torch.bfloat16)``
  on CUDA (fp32 on CPU); masks copied to the host as a user would.
- ``ours_dense``: our streaming tracker (background decode, bounded memory bank,
  ``--precision auto``) at keep ratio 1.0 (sam2's own code path).
- ``ours_keep_0.3``: the same at keep ratio 0.3 (router: prior + uncertainty +
  context, no text).
- ``ours_keep_0.3_videos_per_actor``: ``--videos-per-actor`` V videos in lockstep
  on one predictor (:func:`fastsam2.tracking.lockstep.run_lockstep`: one image-encoder
  call on one frame of each live video per step on GPU, one call per frame on CPU where
  batching the encoder was measured slower, ``settings.encoder_batched_across_videos``;
  one memory-attention call over the (video, object) streams of a step on GPU, one per
  stream on CPU, ``settings.attention_batched_across_streams``; a video that ends is
  replaced by the next).
- ``ours_keep_0.3_compile``: ``ours_keep_0.3`` plus ``--compile``, and
  ``ours_keep_0.3_videos_per_actor_compile``: the lockstep mode plus ``--compile``;
  both run on CUDA (on CPU only with ``--compile-on-cpu``: compiling hiera on CPU
  takes minutes).

Each mode first tracks one warm-up video (``--warmup-frames``, not timed: lazy
initialisation, cuDNN autotuning, compilation). Then ``frames_per_s`` = tracked
frames / wall seconds over all ``--videos`` videos (prompting and, for stock,
``init_state``'s frame loading included: what a user waits for).
``peak_memory_bytes`` is CUDA ``max_memory_allocated`` over the mode (peak stats
reset before it) on GPU; on CPU it is the largest process RSS sampled after every
frame (models included, and RSS seldom shrinks between modes run in one process,
so CPU ratios understate savings; ``rss_growth_bytes`` is the growth during the mode).
``mask_iou_vs_stock`` is the mean IoU of each mode's masks against stock's on the
same frames; ``cpu_s_per_frame`` / ``speedup_cpu_vs_stock`` are process CPU time (all
threads), steadier than wall time on a shared machine. At keep 1.0
``mask_iou_vs_stock`` checks exactness (1.0 in fp32; under bf16 autocast it is
held to ``--exact-iou``).

    python benchmarks/throughput.py [--device cpu|cuda] [--videos N] [--frames F]
        [--image-size S] [--videos-per-actor V] [--json FILE]

JSON: ``results[mode] = {frames_per_s, speedup_vs_stock, peak_memory_bytes,
memory_ratio_vs_stock, wall_s, frames, cpu_s_per_frame, speedup_cpu_vs_stock,
mask_iou_vs_stock[, rss_growth_bytes on CPU]}`` plus ``settings`` and ``exact_keep_1``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchjson import emit
from fastsam2.config import ObjectPrompt
from fastsam2.models.factory import load_sam2
from fastsam2.models.weights import resolve_device
from fastsam2.synthetic import first_frame_prompts, make_video, write_frames
from fastsam2.tracking.memory_bank import process_memory_bytes
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET, attention_batches_on, encoder_batches_on
from fastsam2.tracking.lockstep import run_lockstep
from fastsam2.tracking.runtime import autocast_context, resolve_precision
from fastsam2.tracking.streaming import StreamingTracker

HEIGHT, WIDTH = 240, 320  # synthetic source resolution (SAM2 resizes to --image-size)


def log(msg: str) -> None:
    print(f"[throughput] {msg}", file=sys.stderr, flush=True)


def make_videos(n: int, frames: int, root: Path, seed0: int) -> list[dict[str, Any]]:
    """``n`` synthetic videos, each as frames in memory and as a JPEG folder (stock reads folders)."""
    out = []
    for i in range(n):
        video = make_video(f"v{i}", num_frames=frames, height=HEIGHT, width=WIDTH, seed=seed0 + i)
        folder = write_frames(video, root / f"v{seed0 + i}", fmt="jpg")
        prompt = first_frame_prompts(video)[0]
        # the JPEG round trip is what stock reads: give ours the same pixels
        from PIL import Image

        paths = sorted(Path(folder).glob("*.jpg"), key=lambda p: int(p.stem))
        pixels = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
        out.append({"folder": str(folder), "frames": pixels, "prompt": prompt})
    return out


class Meter:
    """Peak memory of one mode: CUDA max allocated, or the largest sampled RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        self.start = process_memory_bytes(device)  # RSS before the mode on CPU (models loaded)

    def sample(self) -> None:
        self.peak = max(self.peak, process_memory_bytes(self.device))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def run_stock(predictor, videos, device, meter: Meter | None) -> tuple[int, list[np.ndarray]]:
    frames, masks = 0, []
    for v in videos:
        with torch.inference_mode(), autocast_context("auto", device):
            state = predictor.init_state(v["folder"])
            pt = v["prompt"]
            predictor.add_new_points_or_box(state, 0, 1, points=np.array([pt["point"]], np.float32),
                                            labels=np.array([1], np.int32))
            for _, _, logits in predictor.propagate_in_video(state):
                masks.append((logits[:, 0] > 0.0).cpu().numpy())
                frames += 1
                if meter:
                    meter.sample()
        del state
    return frames, masks


def run_ours(tracker: StreamingTracker, videos, meter: Meter | None) -> tuple[int, list[np.ndarray]]:
    frames, masks = 0, []
    for v in videos:
        pt = v["prompt"]
        objs = [ObjectPrompt(obj_id=1, point=pt["point"])]
        for r in tracker.track(iter(v["frames"]), len(v["frames"]), HEIGHT, WIDTH, objs):
            masks.append(r.masks)
            frames += 1
            if meter:
                meter.sample()
    return frames, masks


def run_lockstep_mode(tracker: StreamingTracker, videos, per_actor: int,
                      meter: Meter | None) -> tuple[int, list[np.ndarray]]:
    """``run_ours`` with ``per_actor`` videos in lockstep; masks come back in video order."""
    def steps(view: StreamingTracker, v):
        objs = [ObjectPrompt(obj_id=1, point=v["prompt"]["point"])]
        masks = []
        for r in view.track(iter(v["frames"]), len(v["frames"]), HEIGHT, WIDTH, objs):
            masks.append(r.masks)
            if meter:
                meter.sample()
            yield r.frame_idx
        return masks

    jobs = [(i, lambda view, v=v: steps(view, v)) for i, v in enumerate(videos)]
    outcomes = dict(run_lockstep(tracker, jobs, per_actor))
    for outcome in outcomes.values():
        if isinstance(outcome, BaseException):
            raise outcome
    masks = [m for i in range(len(videos)) for m in outcomes[i]]
    return len(masks), masks


def timed(device: torch.device, fn) -> tuple[float, int, list[np.ndarray], Meter]:
    meter = Meter(device)
    t0, c0 = time.perf_counter(), time.process_time()
    frames, masks = fn(meter)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    meter.cpu_s = time.process_time() - c0
    meter.sample()
    return wall, frames, masks, meter


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--warmup-frames", type=int, default=4)
    ap.add_argument("--keep", type=float, default=0.3)
    ap.add_argument("--videos-per-actor", type=int, default=4, help="videos in lockstep in the videos_per_actor modes")
    ap.add_argument("--exact-iou", type=float, default=0.99,
                    help="least mean mask IoU of ours_dense vs stock counted as exact under bf16 (1.0 in fp32)")
    ap.add_argument("--compile-on-cpu", action="store_true", help="also run the compile mode on CPU (slow)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    log(f"device {device}, precision {precision}, {args.videos} videos x {args.frames} frames at {args.image_size} px")

    stock = load_sam2("sam2.1_hiera_t", image_size=args.image_size, device=device, random_weights=True).model
    ours = load_sam2("sam2.1_hiera_t", image_size=args.image_size, device=device, random_weights=True,
                     predictor_target=PREDICTOR_TARGET).model
    ours.load_state_dict(stock.state_dict())  # the very same weights
    ours.configure_runtime("auto")

    with tempfile.TemporaryDirectory() as tmp:
        videos = make_videos(args.videos, args.frames, Path(tmp), seed0=1)
        warm = make_videos(1, args.warmup_frames, Path(tmp), seed0=1000)

        def ours_mode(keep: float, compile: bool = False, per_actor: int = 0):
            def fn(meter):
                ours.configure_pruning(keep_ratio=keep)
                if compile:
                    ours.configure_runtime("auto", compile=True)
                tracker = StreamingTracker(ours)
                todo = warm * max(per_actor, 1) if meter is None else videos  # warm the batched shapes too
                if per_actor:
                    return run_lockstep_mode(tracker, todo, per_actor, meter)
                return run_ours(tracker, todo, meter)
            return fn

        modes: dict[str, Any] = {
            "stock": lambda meter: run_stock(stock, warm if meter is None else videos, device, meter),
            "ours_dense": ours_mode(1.0),
            f"ours_keep_{args.keep:g}": ours_mode(args.keep),
        }
        lockstep_name = f"ours_keep_{args.keep:g}_videos_per_actor"
        modes[lockstep_name] = ours_mode(args.keep, per_actor=args.videos_per_actor)
        skipped: dict[str, str] = {}
        for name, per_actor in ((f"ours_keep_{args.keep:g}_compile", 0), (f"{lockstep_name}_compile", args.videos_per_actor)):
            if device.type == "cuda" or args.compile_on_cpu:
                modes[name] = ours_mode(args.keep, compile=True, per_actor=per_actor)
            else:
                skipped[name] = "skipped on CPU (compiling hiera on CPU takes minutes; pass --compile-on-cpu)"

        results: dict[str, Any] = {}
        stock_masks: list[np.ndarray] = []
        for name, fn in modes.items():
            log(f"{name}: warm-up")
            try:
                fn(None)
                wall, frames, masks, meter = timed(device, fn)
                peak = meter.peak
            except Exception as exc:  # noqa: BLE001 - e.g. compile unsupported here: say so, go on
                log(f"{name} failed: {type(exc).__name__}: {exc}")
                results[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                continue
            entry = {"frames_per_s": frames / wall, "wall_s": wall, "frames": frames, "peak_memory_bytes": peak,
                     "cpu_s_per_frame": meter.cpu_s / max(frames, 1)}
            if device.type == "cpu":  # RSS rarely shrinks: the growth during the mode compares better
                entry["rss_growth_bytes"] = max(peak - meter.start, 0)
            if name == "stock":
                stock_masks = masks
            elif len(masks) == len(stock_masks):
                entry["mask_iou_vs_stock"] = float(np.mean([iou(a, b) for a, b in zip(masks, stock_masks)]))
            results[name] = entry
            log(f"{name}: {entry['frames_per_s']:.3f} frames/s, peak {peak / 2**20:.0f} MiB")
        base = results.get("stock", {})
        for entry in results.values():
            if "frames_per_s" in entry and "frames_per_s" in base:
                entry["speedup_vs_stock"] = entry["frames_per_s"] / base["frames_per_s"]
                entry["memory_ratio_vs_stock"] = entry["peak_memory_bytes"] / max(base["peak_memory_bytes"], 1)
                entry["speedup_cpu_vs_stock"] = base["cpu_s_per_frame"] / max(entry["cpu_s_per_frame"], 1e-9)
        for name, why in skipped.items():
            results[name] = {"skipped": why}

    dense = results.get("ours_dense", {})
    out = {
        "benchmark": "throughput",
        "weights": "RANDOM (sam2.1_hiera_t): masks are meaningless, costs are real",
        "settings": {
            "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "precision": precision, "videos": args.videos, "frames_per_video": args.frames,
            "image_size": args.image_size, "warmup_frames": args.warmup_frames, "keep_ratio": args.keep,
            "videos_per_actor": args.videos_per_actor,
            # lockstep modes: one encoder call over the live videos' frames (GPU), or one per frame (CPU)
            "encoder_batched_across_videos": encoder_batches_on(device),
            "attention_batched_across_streams": attention_batches_on(device),
            "source_resolution": [HEIGHT, WIDTH], "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "peak_memory": "CUDA max_memory_allocated" if device.type == "cuda" else "largest process RSS sampled per frame",
        },
        "results": results,
        "exact_keep_1": {
            "mask_iou_vs_stock": dense.get("mask_iou_vs_stock"),
            "tolerance": 1.0 if precision == "fp32" else args.exact_iou,
            "ok": dense.get("mask_iou_vs_stock") is not None
            and dense["mask_iou_vs_stock"] >= (1.0 if precision == "fp32" else args.exact_iou),
        },
    }
    return emit(out, args.json)


if __name__ == "__main__":
    main()
