"""Benchmark: stock SAM2 vs. token-pruned SAM2 (keep 0.5 / 0.3 / 0.1) on CPU.

Not a test. Random-weight SAM2.1 hiera-t (masks are meaningless, costs are
real) on a synthetic video of moving discs, long enough that the memory bank is
full. For each image size it runs the same weights dense (sam2's own code path
with timers: ``keep_ratio=1.0``) and pruned, router included (dense CLIP text
relevance with a random-weight ViT-B/16, closed-form uncertainty, prior and
context), and prints JSON:

    results[image_size][keep] = {ms_per_frame: {<component>..., total}, speedup,
        speedup_median, mem_attn_speedup, bank_bytes_per_frame, bank_ratio,
        gflops_per_frame: {...}, gflops_ratio, router: {...}, ...}
    multi_object[image_size] = {num_objects, stock: ..., "0.3": ..., speedup}
    rss[image_size][keep] = {short_frames, long_frames, short_peak_rss, long_peak_rss, growth}
    peak_memory[image_size] = {stock, <keep>, <keep>_over_stock}  (CPU RSS, bytes)
    rss_growth = rss[largest image size][0.3].growth_tracking (peak while tracking)

Every cost is in the headline figures:

- ``ms_per_frame`` and ``speedup`` are means over **all** tracked frames (the
  prompted frame and the router's CLIP keyframes included): the amortised cost
  of a video of ``--frames`` frames; ``speedup_cpu`` is the same ratio of process
  CPU time (all threads), steadier than wall time on a shared machine.
  ``ms_per_frame_median`` / ``speedup_median``
  are the older steady-state figures (medians over frames after the memory bank
  is full) and ``speedup_paired`` the median of per-frame ratios, beside them.
- ``gflops_per_frame`` is the mean over all frames, counted on every frame with
  ``nn.MultiheadAttention``'s fused fast path off while counting (the counter has
  no formula for it, so CLIP's attention would be missed). Wall times therefore
  include the counter's dispatch overhead and CLIP without that fast path, in
  every config alike (``--no-flops`` times without the counter).
- ``router`` reports the keyframe policy and count and the router's share of
  time and FLOPs.
- ``peak_memory`` compares a pruned run's peak RSS with the dense run's at the
  same settings (each in a fresh process, models and CLIP included).

Frames are decoded lazily and per-frame outputs outside the memory and pointer
windows are evicted, as the streaming video actor does, so the state stays
bounded.

    python benchmarks/pruning_speed.py [--image-size 1024] [--frames N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchjson import emit
from fastsam2 import preprocess
from fastsam2.models.factory import load_sam2
from fastsam2.schema import COMPONENTS
from fastsam2.tracking.memory_bank import evict_unreachable, memory_bank_stats, process_memory_bytes, windows
from fastsam2.tracking.instrument import STATS_KEY
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET
from fastsam2.models.factory import CLIP_WEIGHTS_DTYPE
from fastsam2.tracking.streaming import new_inference_state

SAM2_MEAN = torch.tensor(preprocess.SAM2_MEAN).view(3, 1, 1)
SAM2_STD = torch.tensor(preprocess.SAM2_STD).view(3, 1, 1)
COLORS = [(0.95, 0.15, 0.1), (0.1, 0.8, 0.2), (0.2, 0.3, 0.95)]


class SyntheticVideo:
    """Moving discs over a smooth random background, decoded lazily (SAM2-normalised)."""

    def __init__(self, size: int, num_frames: int, num_objects: int = 1, seed: int = 0) -> None:
        self.size, self.num_frames, self.num_objects = size, num_frames, num_objects
        g = torch.Generator().manual_seed(seed)
        low = torch.rand(1, 3, 16, 16, generator=g)
        self.background = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        self.radius = size * 0.08
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        self.yy, self.xx = yy.float(), xx.float()

    def center(self, obj: int, t: int) -> tuple[float, float]:
        s = self.size
        x = s * (0.2 + 0.6 * ((t * 0.013 + obj * 0.3) % 1.0))
        y = s * (0.25 + 0.25 * obj)
        return x, y

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, t: int) -> torch.Tensor:
        img = self.background.clone()
        for o in range(self.num_objects):
            cx, cy = self.center(o, t)
            m = (self.xx - cx) ** 2 + (self.yy - cy) ** 2 < self.radius**2
            img[:, m] = torch.tensor(COLORS[o % len(COLORS)]).view(3, 1)
        return (img - SAM2_MEAN) / SAM2_STD


def make_state(predictor, video: SyntheticVideo) -> dict[str, Any]:
    """The streaming actor's inference state, with frames drawn lazily from ``video``."""
    state = new_inference_state(predictor, video, video.size, video.size)
    state[STATS_KEY] = {}
    return state


def evict(predictor, state: dict[str, Any], frame_idx: int) -> None:
    """Drop what no later frame can read, as the streaming actor does; keep finished frames' stats."""
    evict_unreachable(predictor, state, frame_idx)
    _, window = windows(predictor)
    for t in [t for t in state[STATS_KEY] if t < frame_idx - window]:
        state.setdefault("_done_stats", {})[t] = state[STATS_KEY].pop(t)


def start_video(predictor, size, num_frames, num_objects, keep, router, text, tmp: Path) -> dict[str, Any]:
    """Configure, prompt every object on frame 0, and return a lazily-run tracking job."""
    predictor.configure_pruning(keep_ratio=keep, router=router if keep < 1.0 else None)
    video = SyntheticVideo(size, num_frames, num_objects)
    state = make_state(predictor, video)
    predictor.set_video_text(state, text)
    for o in range(num_objects):
        cx, cy = video.center(o, 0)
        predictor.add_new_points_or_box(state, 0, o + 1, points=[[cx, cy]], labels=[1])
    return {"predictor": predictor, "state": state, "gen": predictor.propagate_in_video(state),
            "frames": {}, "peak_rss": 0}


def step(job: dict[str, Any], count_flops: bool = False) -> int:
    """Run one frame of a job; record its wall time and component stats; evict."""
    predictor, state = job["predictor"], job["state"]
    predictor.count_flops = count_flops
    t0, c0 = time.perf_counter(), time.process_time()
    f, _, _ = next(job["gen"])
    wall = (time.perf_counter() - t0) * 1000.0
    cpu = (time.process_time() - c0) * 1000.0
    predictor.count_flops = False
    stats = dict(state[STATS_KEY].get(f, {}))
    stats["wall_ms"] = wall
    stats["cpu_ms"] = cpu
    job["frames"][f] = stats
    evict(predictor, state, f)
    job["peak_rss"] = max(job["peak_rss"], process_memory_bytes("cpu"))
    return f


def finish(job: dict[str, Any]) -> dict[str, Any]:
    for _ in job["gen"]:  # drain (nothing left when every frame was stepped)
        pass
    state = job["state"]
    return {"frames": job["frames"], "bank": memory_bank_stats(state), "peak_rss_sampled": job["peak_rss"],
            "keyframes": state.get("fastsam2_router", {}).get("keyframes", 0)}


def run_lockstep(configs: dict[str, tuple[Any, float]], size, num_frames, num_objects, router, text,
                 tmp: Path, count_flops: bool = True) -> dict[str, dict[str, Any]]:
    """Track the same video with every config, frame by frame in turn.

    On a shared CPU the load drifts over minutes; interleaving the configs frame
    by frame exposes them to the same drift, so their ratios stay meaningful.
    Every frame runs under the FLOP counter (unless ``count_flops`` is off).
    """
    jobs = {label: start_video(p, size, num_frames, num_objects, keep, router, text, tmp)
            for label, (p, keep) in configs.items()}
    for t in range(num_frames):
        for job in jobs.values():
            step(job, count_flops=count_flops)
        if t % 4 == 3 or t == num_frames - 1:
            last = {lb: round(j["frames"][t]["wall_ms"]) for lb, j in jobs.items()}
            log(f"[{size}] x{num_objects} frame {t}: wall ms {last}")
    return {label: finish(job) for label, job in jobs.items()}


def run_video(predictor, size, num_frames, num_objects, keep, router, text, tmp: Path) -> dict[str, Any]:
    """Track one video with one config (the RSS child)."""
    job = start_video(predictor, size, num_frames, num_objects, keep, router, text, tmp)
    for _ in range(num_frames):
        step(job)
    return finish(job)


def steady_frames(frames: dict[int, Any], num_maskmem: int) -> list[int]:
    """Frames after the memory bank is full."""
    return [f for f in frames if f >= num_maskmem] or list(frames)


def _mean(frames: dict[int, Any], key: str, which: list[int] | None = None) -> float:
    which = list(frames) if which is None else which
    return statistics.mean(frames[f].get(key, 0.0) for f in which)


def summarize(run: dict[str, Any], num_maskmem: int, router_config: dict[str, Any] | None) -> dict[str, Any]:
    """Means over all tracked frames (amortised), with steady-state medians beside them."""
    frames = run["frames"]
    steady = steady_frames(frames, num_maskmem)
    ms = {c: _mean(frames, f"ms_{c}") for c in COMPONENTS}
    ms["total"] = _mean(frames, "wall_ms")
    med = {c: statistics.median(frames[f][f"ms_{c}"] for f in steady) for c in COMPONENTS}
    med["total"] = statistics.median(frames[f]["wall_ms"] for f in steady)
    out: dict[str, Any] = {
        "ms_per_frame": {k: round(v, 1) for k, v in ms.items()},
        "ms_per_frame_median": {k: round(v, 1) for k, v in med.items()},
        "ms_per_frame_max": round(max(frames[f]["wall_ms"] for f in frames), 1),
        "cpu_ms_per_frame": round(_mean(frames, "cpu_ms"), 1),
        "frames_timed": len(frames),
        "frames_steady": len(steady),
        "tokens_kept_fraction": round(
            sum(frames[f]["tokens_kept"] for f in frames) / max(1, sum(frames[f]["tokens_total"] for f in frames)), 4
        ),
        "bank_bytes_per_frame": round(run["bank"]["bank_bytes_per_frame"]),
        "state_bytes_per_frame": round(run["bank"]["total_bytes"] / max(1, run["bank"]["frames"])),
        "router_keyframes": run["keyframes"],
    }
    counted = [f for f in frames if any(k.startswith("gflops_") for k in frames[f])]
    if counted:
        g = {c: round(_mean(frames, f"gflops_{c}", counted), 2) for c in COMPONENTS}
        g["total"] = round(sum(g.values()), 2)
        out["gflops_per_frame"] = g
        out["gflops_frames_counted"] = len(counted)
    if router_config is not None:
        r: dict[str, Any] = {
            "keyframes": run["keyframes"],
            "keyframe_policy": (
                f"per object: when its prior leaves the scored region, else every "
                f"{router_config['keyframe_interval']} frames"
                if router_config.get("semantic_crop")
                else f"every {router_config['keyframe_interval']} frames or prior IoU < {router_config['keyframe_min_iou']}"
            ),
            "keyframe_interval": router_config["keyframe_interval"],
            "frames_per_keyframe": round(len(frames) / run["keyframes"], 2) if run["keyframes"] else None,
            "ms_per_frame": round(ms["router"], 1),
            "time_share": round(ms["router"] / ms["total"], 4) if ms["total"] else None,
        }
        if "gflops_per_frame" in out:
            g = out["gflops_per_frame"]
            r["gflops_per_frame"] = g["router"]
            r["gflops_share"] = round(g["router"] / g["total"], 4) if g["total"] else None
        out["router"] = r
    return out


def build(size: int, threads: int):
    torch.set_num_threads(threads)
    return load_sam2(
        "sam2.1_hiera_t", image_size=size, device="cpu", random_weights=True, predictor_target=PREDICTOR_TARGET
    ).model


def build_bench_router(semantic: str, clip_model: str):
    from fastsam2.tracking.router import build_router

    router = build_router(semantic=semantic, clip_model=clip_model, clip_random_weights=True,
                          clip_weights_dtype=CLIP_WEIGHTS_DTYPE)
    if router.clip is not None:  # CLIP is built on the first phrase: build it now, as setup,
        router.clip.clip  # noqa: B018 - so its loading is not counted as a tracked frame's cost
    return router


def bench_size(args, size: int, router, tmp: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Stock and every keep ratio on one video, lockstep; then the multi-object video."""
    keeps = [1.0, *args.keep]
    predictors = {k: build(size, args.threads) for k in dict.fromkeys(keeps + list(args.multi_keep))}
    nm = predictors[1.0].num_maskmem
    label = lambda k: "stock" if k == 1.0 else str(k)  # noqa: E731
    rcfg = asdict(router.config)
    summarize_ = lambda lb, r: summarize(r, nm, None if lb == "stock" else rcfg)  # noqa: E731
    results: dict[str, Any] = {}
    if args.single:
        log(f"[{size}] {len(keeps)} configs x {args.frames} frames, lockstep")
        runs = run_lockstep({label(k): (predictors[k], k) for k in keeps}, size, args.frames, 1, router, args.text,
                            tmp, count_flops=args.flops)
        results = {lb: summarize_(lb, r) for lb, r in runs.items()}
        _add_ratios(results, runs, nm)
    multi = None
    if args.objects > 1:
        mk = [1.0, *args.multi_keep]
        runs = run_lockstep({label(k): (predictors[k], k) for k in mk}, size, args.frames, args.objects, router,
                            args.text, tmp, count_flops=args.flops)
        multi = {"num_objects": args.objects, **{lb: summarize_(lb, r) for lb, r in runs.items()}}
        _add_ratios(multi, runs, nm)
    return results, multi


def _add_ratios(block: dict[str, Any], runs: dict[str, Any], num_maskmem: int) -> None:
    """Ratios against stock: ``speedup`` of the all-frame means (amortised),
    ``speedup_median`` of the steady-state medians, ``speedup_paired`` the median of
    per-frame ratios (each frame's configs ran back to back: least load-sensitive)."""
    stock = block["stock"]
    sf = runs["stock"]["frames"]
    for label, r in block.items():
        if not isinstance(r, dict) or "ms_per_frame" not in r:
            continue
        r["speedup"] = round(stock["ms_per_frame"]["total"] / r["ms_per_frame"]["total"], 2)
        r["speedup_median"] = round(stock["ms_per_frame_median"]["total"] / r["ms_per_frame_median"]["total"], 2)
        r["speedup_cpu"] = round(stock["cpu_ms_per_frame"] / r["cpu_ms_per_frame"], 2)
        frames = runs[label]["frames"]
        steady = steady_frames(frames, num_maskmem)
        r["speedup_paired"] = round(statistics.median(sf[f]["wall_ms"] / frames[f]["wall_ms"] for f in steady), 2)
        r["mem_attn_speedup"] = round(
            stock["ms_per_frame"]["memory_attention"] / max(r["ms_per_frame"]["memory_attention"], 1e-3), 2
        )
        r["bank_ratio"] = round(r["bank_bytes_per_frame"] / stock["bank_bytes_per_frame"], 3)
        if "gflops_per_frame" in r and "gflops_per_frame" in stock:
            r["gflops_ratio"] = round(r["gflops_per_frame"]["total"] / stock["gflops_per_frame"]["total"], 3)
            ma = stock["gflops_per_frame"]["memory_attention"]
            r["mem_attn_gflops_ratio"] = round(r["gflops_per_frame"]["memory_attention"] / ma, 3) if ma else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _vm_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss_child(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one video in this (fresh) process; report its peak RSS.

    ``peak_rss`` is the process peak (ru_maxrss, model building included);
    ``peak_rss_tracking`` the peak while tracking (VmHWM reset after building).
    """
    predictor = build(cfg["size"], cfg["threads"])
    router = build_bench_router(cfg["semantic"], cfg["clip_model"]) if cfg["keep"] < 1.0 else None
    reset = _reset_peak_rss()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_video(predictor, cfg["size"], cfg["frames"], 1, cfg["keep"], router, cfg["text"], Path(tmp))
    return {
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_tracking": _vm_hwm() if reset else None,
        "peak_rss_sampled": run["peak_rss_sampled"],
        "bank_bytes": run["bank"]["bank_bytes"],
    }


def bench_rss(args, size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keep in args.rss_keep:
        label = "stock" if keep == 1.0 else str(keep)
        res = {}
        for name, n in (("short", args.rss_frames), ("long", 4 * args.rss_frames)):
            cfg = {"size": size, "frames": n, "keep": keep, "threads": args.threads, "semantic": args.semantic,
                   "clip_model": args.clip_model, "text": args.text}
            log(f"[{size}] RSS keep={label} {name} video ({n} frames, fresh process)")
            proc = subprocess.run(
                [sys.executable, __file__, "--_rss-child", json.dumps(cfg)], capture_output=True, text=True, check=True
            )
            res[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        out[label] = {
            "short_frames": args.rss_frames,
            "long_frames": 4 * args.rss_frames,
            "short_peak_rss": res["short"]["peak_rss"],
            "long_peak_rss": res["long"]["peak_rss"],
            "growth": round(res["long"]["peak_rss"] / res["short"]["peak_rss"] - 1, 4),
        }
        if res["short"].get("peak_rss_tracking") and res["long"].get("peak_rss_tracking"):
            out[label]["short_peak_rss_tracking"] = res["short"]["peak_rss_tracking"]
            out[label]["long_peak_rss_tracking"] = res["long"]["peak_rss_tracking"]
            out[label]["growth_tracking"] = round(
                res["long"]["peak_rss_tracking"] / res["short"]["peak_rss_tracking"] - 1, 4
            )
        log(f"[{size}] RSS keep={label}: {out[label]}")
    return out


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image-size", type=int, action="append", help="repeatable; default 1024 and 512")
    ap.add_argument("--frames", type=int, default=20, help="frames per video (>= 10)")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    ap.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.3, 0.1])
    ap.add_argument("--objects", type=int, default=3, help="objects in the multi-object run (1 = skip it)")
    ap.add_argument("--multi-keep", type=float, nargs="+", default=[0.3])
    ap.add_argument("--rss-frames", type=int, default=8, help="short video for RSS; the long one is 4x")
    ap.add_argument("--rss-keep", type=float, nargs="*", default=[1.0, 0.3],
                    help="keep ratios to measure RSS for (1.0 = the dense run, the peak-memory baseline)")
    ap.add_argument("--skip-single", dest="single", action="store_false",
                    help="skip the one-object run (e.g. to run the multi-object or RSS parts on their own)")
    ap.add_argument("--no-flops", dest="flops", action="store_false", help="time without the FLOP counter")
    ap.add_argument("--semantic", default="clip", choices=["clip", "paper", "none"])
    ap.add_argument("--clip-model", default="ViT-B-16")
    ap.add_argument("--text", default="a red ball")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--_rss-child", dest="rss_child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")

    if args.rss_child:
        print(json.dumps(rss_child(json.loads(args.rss_child))))
        return {}
    if args.frames < 10:
        ap.error("--frames must be >= 10 so the memory bank (7 frames) is full for a few frames")
    sizes = args.image_size or [1024, 512]
    router = build_bench_router(args.semantic, args.clip_model)
    report: dict[str, Any] = {
        "model": "sam2.1_hiera_t (random weights)",
        "device": "cpu",
        "threads": args.threads,
        "frames": args.frames,
        "router": {"semantic": args.semantic, "clip_model": f"{args.clip_model} (random weights)",
                   "uncertainty": router.config.uncertainty, "text": args.text,
                   "clip_weights": f"matrices stored {CLIP_WEIGHTS_DTYPE}, fp32 arithmetic; built on the first phrase",
                   "config": asdict(router.config)},
        "accounting": "ms_per_frame/speedup: mean over all tracked frames (amortised, keyframes included); "
                      "*_median: steady-state medians; gflops_per_frame: mean over all frames, MHA fast path off "
                      "while counting",
        "results": {},
        "multi_object": {},
        "rss": {},
        "peak_memory": {},
    }
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            results, multi = bench_size(args, size, router, Path(tmp)) if args.single or args.objects > 1 else ({}, None)
            if results:
                report["results"][str(size)] = results
            if multi is not None:
                report["multi_object"][str(size)] = multi
            if args.json:  # partial results survive an interrupted run
                args.json.write_text(json.dumps(report, indent=2))
            if args.rss_keep:
                report["rss"][str(size)] = bench_rss(args, size)
    # Top-level: the largest image size, keep 0.3 (or the first keep measured); the
    # tracking-phase peak when the kernel let us reset it (the process peak is
    # dominated by model building and would hide any growth).
    for size_key, per_keep in report["rss"].items():
        if "stock" in per_keep:
            peaks: dict[str, Any] = {"stock": per_keep["stock"]["long_peak_rss"]}
            for lb, v in per_keep.items():
                if lb != "stock":
                    peaks[lb] = v["long_peak_rss"]
                    peaks[f"{lb}_over_stock"] = round(v["long_peak_rss"] / peaks["stock"], 4)
            report["peak_memory"][size_key] = peaks
    first = report["rss"].get(str(max(sizes)), {})
    pruned = {k: v for k, v in first.items() if k != "stock"}
    entry = pruned.get("0.3", next(iter(pruned.values()), {})) if pruned else {}
    report["rss_growth"] = entry.get("growth_tracking", entry.get("growth"))
    report["wall_s"] = round(time.time() - t0, 1)
    return emit(report, args.json)


if __name__ == "__main__":
    main()
