"""Benchmark: how much of a run's wall time is pipeline (Ray, I/O, encoding) rather than model.

Not a test (tests/test_cluster_load.py runs a small version for correctness only). Makes N
short synthetic videos (mp4, one object each, a first-frame click), labels them with
random-weight SAM2.1 hiera-t through the same ``run_pipeline`` as ``fastsam2-batch run`` on
a local Ray instance (2 CPUs by default), then checks every video's rows are present exactly
once and prints JSON:

    wall_s            run_pipeline(): planning, actor start-up (model build), every video, every write
    model_s           sum over all frames of the tracker's per-frame time (frames/ms_total: image
                      encoder, memory attention, decoder, memory encoder, frame decode)
    model_s_videos    the same from videos/ (ms_per_frame * num_frames; ms_per_frame is a median)
    overhead_ratio    wall_s / (model_s / track_actors) - 1: the share of the run beyond the model
    startup_s         first result's finish time - run start - that video's model time
    steady_overhead_ratio   overhead_ratio with start-up taken out
    check             rows expected vs. found, duplicates (must be 0), ok

    python benchmarks/pipeline_overhead.py --videos 50 --frames 3 --image-size 256
    python benchmarks/pipeline_overhead.py --videos 10 --frames 2 --json /tmp/overhead.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def check_rows(output: str, n_videos: int, frames: int) -> dict:
    """Every video's rows present exactly once in masks/, frames/ and videos/; no errors/."""
    from fastsam2.storage import read_table

    masks = read_table(output, "masks").to_pylist()
    mask_keys = [(m["video_id"], m["obj_id"], m["frame_idx"]) for m in masks]
    frame_keys = [(r["video_id"], r["frame_idx"]) for r in read_table(output, "frames").to_pylist()]
    video_ids = [r["video_id"] for r in read_table(output, "videos").to_pylist()]
    expected_videos = {f"load-{i:03d}" for i in range(n_videos)}
    expected_frames = {(v, k) for v in expected_videos for k in range(frames)}
    out = {
        "videos_expected": n_videos, "videos": len(video_ids),
        "mask_rows_expected": n_videos * frames, "mask_rows": len(masks),
        "frame_rows": len(frame_keys), "error_rows": read_table(output, "errors").num_rows,
        "duplicates": (len(mask_keys) - len(set(mask_keys))) + (len(frame_keys) - len(set(frame_keys)))
        + (len(video_ids) - len(set(video_ids))),
    }
    out["ok"] = (set(video_ids) == expected_videos and {(v, f) for v, _, f in mask_keys} == expected_frames
                 and set(frame_keys) == expected_frames and out["duplicates"] == 0 and out["error_rows"] == 0)
    return out


def run_benchmark(n_videos: int = 50, frames: int = 3, image_size: int = 256, height: int = 64, width: int = 80,
                  num_cpus: int = 2, track_actors: int = 1, workdir: str | None = None, output: str | None = None) -> dict:
    """Make the videos, run the pipeline once, measure, check. Joins Ray if it is already up."""
    import ray

    from fastsam2.cli.options import build_config
    from fastsam2.pipeline import run_pipeline
    from fastsam2.storage import read_table
    from fastsam2.synthetic import write_clip_dataset

    own_dir = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="fastsam2-overhead-"))
    try:
        manifest = write_clip_dataset(work / "videos", {f"load-{i:03d}": frames for i in range(n_videos)}, height, width)
        output = output or str(work / "out")
        cfg = build_config((str(manifest),), output=output, random_weights=True, image_size=image_size,
                           device="cpu", track_actors=track_actors)
        t = time.perf_counter()
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - t

        start_wall = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        summary = run_pipeline(cfg, progress=False)
        wall_s = time.perf_counter() - t0

        frames_tbl = read_table(output, "frames").to_pylist()
        videos = read_table(output, "videos").to_pylist()
        per_video_ms: dict[str, float] = {}
        for r in frames_tbl:
            per_video_ms[r["video_id"]] = per_video_ms.get(r["video_id"], 0.0) + (r["ms_total"] or 0.0)
        model_s = sum(per_video_ms.values()) / 1000
        model_s_videos = sum((v["ms_per_frame"] or 0.0) * v["num_frames"] for v in videos) / 1000
        first = min(videos, key=lambda v: v["finished_at"]) if videos else None
        startup_s = ((first["finished_at"] - start_wall).total_seconds() - per_video_ms[first["video_id"]] / 1000
                     if first else None)
        ideal = model_s / max(1, track_actors)
        result = {
            "videos": n_videos, "frames_per_video": frames, "image_size": image_size, "frame_hw": [height, width],
            "num_cpus": int(ray.cluster_resources().get("CPU", 0)), "track_actors": track_actors,
            "ray_init_s": round(ray_init_s, 3), "wall_s": round(wall_s, 3),
            "model_s": round(model_s, 3), "model_s_videos": round(model_s_videos, 3),
            "overhead_ratio": round(wall_s / ideal - 1, 4) if ideal else None,
            "startup_s": round(startup_s, 3) if startup_s is not None else None,
            "steady_overhead_ratio": round((wall_s - startup_s) / ideal - 1, 4) if ideal and startup_s is not None else None,
            "ms_per_video_pipeline": round(1000 * (wall_s - (startup_s or 0) - ideal) / max(1, n_videos), 1),
            "summary": {"ok": summary.ok, "failed": summary.failed, "skipped": summary.skipped},
            "check": check_rows(output, n_videos, frames),
        }
        if started_ray:
            ray.shutdown()
        return result
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=50)
    p.add_argument("--frames", type=int, default=3, help="frames per video")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=80)
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray instance")
    p.add_argument("--track-actors", type=int, default=1, help="SAM2 actors (each takes 1 CPU)")
    p.add_argument("--output", help="output root (default: a temp dir); s3:// works with AWS_* set")
    p.add_argument("--json", help="also write the JSON here")
    a = p.parse_args(argv)
    result = run_benchmark(a.videos, a.frames, a.image_size, a.height, a.width, a.num_cpus, a.track_actors,
                           output=a.output)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0 if result["check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
