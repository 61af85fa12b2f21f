"""Benchmark: export memory stays per-video as a run grows (the exporters stream the run).

Not a test. Writes synthetic runs with the pipeline's own writer (real Parquet, real COCO
RLE of moving discs) of N and 4N videos, exports each to every format, and prints JSON:

    videos, frames, mask_rows       size of the run exported
    parquet_bytes                   the run's masks/ Parquet on disk
    wall_s                          export wall time
    python_peak_bytes               peak Python-heap allocation during the export (tracemalloc;
                                    numpy arrays included)
    arrow_peak_bytes                how far the export raised pyarrow's pool peak (0: under an earlier peak)
    output_bytes                    what the export wrote

If the exporters held the whole run, the peaks would grow ~4x from N to 4N videos.

    python benchmarks/export_memory.py --videos 8 --frames 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from benchjson import emit

REPO = Path(__file__).resolve().parents[1]


def write_run(root: Path, videos: int, frames: int, objects: int, height: int, width: int) -> int:
    from fastsam2 import rle
    from fastsam2.output import write_video
    from fastsam2.schema import table_from_rows

    yy, xx = np.mgrid[:height, :width]
    rows_total = 0
    for v in range(videos):
        vid = f"video-{v:04d}"
        masks = []
        for t in range(frames):
            for k in range(1, objects + 1):
                cx, cy = (20 + 3 * t + 40 * k) % width, (30 + 2 * t * k) % height
                counts, area, bbox = rle.encode((xx - cx) ** 2 + (yy - cy) ** 2 < 15**2)
                masks.append(dict(video_id=vid, obj_id=k, frame_idx=t, height=height, width=width, rle=counts,
                                  area=area, bbox=bbox, score=0.9))
        row = dict(video_id=vid, uri=f"/v/{vid}.mp4", status="ok", num_frames=frames, height=height, width=width,
                   num_objects=objects, text="a disc", random_weights=True, run_id="bench")
        write_video(str(root), vid, {"masks": table_from_rows("masks", masks), "frames": table_from_rows("frames", []),
                                     "videos": table_from_rows("videos", [row])})
        rows_total += len(masks)
    return rows_total


def folder_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(run: Path, out: Path, fmt: str) -> dict:
    import pyarrow as pa

    from fastsam2.export import export_run

    pool = pa.default_memory_pool()
    pool.release_unused()
    arrow_before = pool.max_memory()
    tracemalloc.start()
    t0 = time.perf_counter()
    export_run(str(run), str(out), fmt)
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"wall_s": round(wall, 3), "python_peak_bytes": peak,
            "arrow_peak_bytes": max(0, pool.max_memory() - arrow_before) if arrow_before is not None else None,
            "output_bytes": folder_bytes(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm-up"  # imports and first-use allocations are not the run's
        write_run(warm, 1, 2, 1, args.height, args.width)
        for fmt in ("coco-video", "davis", "sa-v"):
            measure(warm, Path(tmp) / "warm-out" / fmt, fmt)
        for n in (args.videos, 4 * args.videos):
            run = Path(tmp) / f"run-{n}"
            rows = write_run(run, n, args.frames, args.objects, args.height, args.width)
            for fmt, target in (("coco-video", "coco.json"), ("davis", "davis"), ("sa-v", "sav")):
                res = measure(run, Path(tmp) / f"out-{n}" / target, fmt)
                results.append({"format": fmt, "videos": n, "frames": n * args.frames, "mask_rows": rows,
                                "parquet_bytes": folder_bytes(run / "masks"), **res})
    doc = {"benchmark": "export_memory", "size": f"{args.width}x{args.height}", "objects": args.objects,
           "results": results,
           "peak_growth_4x_videos": {
               fmt: round(next(r["python_peak_bytes"] for r in results if r["format"] == fmt and r["videos"] == 4 * args.videos)
                          / max(1, next(r["python_peak_bytes"] for r in results if r["format"] == fmt and r["videos"] == args.videos)), 2)
               for fmt in ("coco-video", "davis", "sa-v")}}  # fmt: skip
    emit(doc, args.json)


if __name__ == "__main__":
    main()
