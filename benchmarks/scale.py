"""Scale rehearsal: many tiny videos through the real pipeline, output on a loopback S3.

Random-weight SAM2.1 hiera-t (masks are noise; the pipeline is the point) on a local Ray
instance, outputs written to a moto S3 server on 127.0.0.1 (started here), then measured:

    driver_rss_mb         the driver's resident memory: before the run, peak during it, growth
                          (the driver keeps one small summary row per video; masks never reach it)
    wall_s / model_s      run_pipeline() wall time, and the tracker's own per-frame time summed
    overhead_ms_per_video (wall_s - model_s / track_actors) / videos: what the pipeline adds
    resume                a second run of the same job over the same output: its wall time and
                          the time to list the done set (``videos/`` markers) on S3
    listing               the done-set listing over ``--listing-videos`` outputs: when the run
                          itself had fewer videos, its ``videos/`` markers are copied under new
                          ids until there are that many (same objects, same listing path)
    check                 every video's rows present exactly once, no errors/ rows

    python benchmarks/scale.py --videos 2000 --frames 2 --image-size 64
    python benchmarks/scale.py --videos 200 --frames 2 --image-size 64 --listing-videos 2000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests"))  # the tests' loopback S3 starter

from helpers import start_moto  # noqa: E402


class RssSampler:
    """The driver's resident memory, sampled every ``period_s`` in a thread."""

    def __init__(self, period_s: float = 0.2):
        import psutil

        self.proc, self.period_s = psutil.Process(), period_s
        self.start_mb = self.peak_mb = self.proc.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak_mb = max(self.peak_mb, self.proc.memory_info().rss / 2**20)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        self._stop.set()
        self._thread.join()
        self.end_mb = self.proc.memory_info().rss / 2**20
        return False


def pad_done_markers(output: str, target: int) -> int:
    """Copy ``videos/`` markers under new ids until the output has ``target`` of them."""
    from concurrent.futures import ThreadPoolExecutor

    from fastsam2.storage import filesystem_for, list_parquet, strip_protocol

    fs = filesystem_for(output, None)
    files = list_parquet(output, "videos")
    missing = target - len(files)
    if missing <= 0 or not files:
        return 0
    base = strip_protocol(output).rstrip("/") + "/videos"

    def copy(i: int) -> None:
        fs.copy(files[i % len(files)], f"{base}/pad-{i:05d}.parquet")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(copy, range(missing)))
    return missing


def run(n_videos: int, frames: int, image_size: int, listing_videos: int, num_cpus: int, track_actors: int) -> dict:
    import ray

    from fastsam2.cli.options import build_config
    from fastsam2.pipeline import plan_tasks, run_pipeline
    from fastsam2.storage import done_video_ids, read_table
    from fastsam2.synthetic import write_clip_dataset
    from pipeline_overhead import check_rows

    moto, url = start_moto()
    try:
        import boto3

        bucket = f"scale-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
        output = f"s3://{bucket}/out"
        work = Path(tempfile.mkdtemp(prefix="fastsam2-scale-"))
        t = time.perf_counter()
        manifest = write_clip_dataset(work / "videos", {f"load-{i:03d}": frames for i in range(n_videos)})
        make_s = time.perf_counter() - t
        cfg = build_config((str(manifest),), output=output, random_weights=True, image_size=image_size,
                           device="cpu", track_actors=track_actors)
        cfg.progress_log_interval_s = 0  # the benchmark prints JSON only
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)

        with RssSampler() as rss:
            t0 = time.perf_counter()
            summary = run_pipeline(cfg, progress=False)
            wall_s = time.perf_counter() - t0
        frames_tbl = read_table(output, "frames").to_pylist()
        model_s = sum(r["ms_total"] or 0.0 for r in frames_tbl) / 1000
        check = check_rows(output, n_videos, frames)

        # Resume: the same job again over the same output (everything is skipped).
        t = time.perf_counter()
        done = done_video_ids(output, cfg.storage_options)
        resume_listing_s = time.perf_counter() - t
        t = time.perf_counter()
        resumed = run_pipeline(cfg, progress=False)
        resume_wall_s = time.perf_counter() - t
        t = time.perf_counter()
        _, todo = plan_tasks(cfg)
        plan_s = time.perf_counter() - t

        padded = pad_done_markers(output, listing_videos)
        t = time.perf_counter()
        listed = done_video_ids(output, cfg.storage_options)
        listing_s = time.perf_counter() - t
        ray.shutdown()
        return {
            "weights": "RANDOM (SAM2.1 hiera-t built in code; masks are noise)",
            "videos": n_videos, "frames_per_video": frames, "image_size": image_size, "num_cpus": num_cpus,
            "track_actors": track_actors, "output": "s3 (moto server on 127.0.0.1)",
            "make_videos_s": round(make_s, 2),
            "wall_s": round(wall_s, 2), "model_s": round(model_s, 2),
            "overhead_ms_per_video": round(1000 * (wall_s - model_s / track_actors) / n_videos, 1),
            "wall_ms_per_video": round(1000 * wall_s / n_videos, 1),
            "driver_rss_mb": {"start": round(rss.start_mb, 1), "peak": round(rss.peak_mb, 1),
                              "end": round(rss.end_mb, 1), "growth": round(rss.peak_mb - rss.start_mb, 1)},
            "summary": {"ok": summary.ok, "failed": summary.failed, "skipped": summary.skipped},
            "resume": {"done_listed": len(done), "listing_s": round(resume_listing_s, 3),
                       "wall_s": round(resume_wall_s, 3), "plan_s": round(plan_s, 3),
                       "skipped": resumed.skipped, "todo_after": len(todo)},
            "listing": {"outputs": len(listed), "padded_markers": padded, "listing_s": round(listing_s, 3),
                        "under_10s": listing_s < 10.0},
            "check": check,
        }
    finally:
        moto.terminate()
        moto.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=2000)
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--listing-videos", type=int, default=2000,
                   help="list the done set over at least this many outputs (markers copied if needed)")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--track-actors", type=int, default=1)
    p.add_argument("--json", help="also write the JSON here")
    a = p.parse_args(argv)
    result = run(a.videos, a.frames, a.image_size, max(a.listing_videos, a.videos), a.num_cpus, a.track_actors)
    text = json.dumps(result, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0 if result["check"]["ok"] and result["listing"]["under_10s"] else 1


if __name__ == "__main__":
    sys.exit(main())
