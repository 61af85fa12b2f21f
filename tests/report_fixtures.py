"""Fake runs (frames/, videos/, errors/ and eval/ tables) and a headless browser, for the report tests."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastsam2.eval.evaluate import SCORES_SCHEMA
from fastsam2.schema import COMPONENTS, table_from_rows

VIDEOS = {"car-shadow": 6, "dog": 8}
MB = 1024 * 1024
WHEN = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)


def frame_ms(scale: float, i: int) -> dict[str, float]:
    """Component times of frame i; ms_total adds 2 ms not attributed to any component."""
    ms = {f"ms_{c}": (k + 1) * scale + 0.25 * i for k, c in enumerate(COMPONENTS)}
    ms["ms_total"] = sum(ms.values()) + 2.0
    return ms


def make_run(
    root: Path, keep: float, scale: float, videos=VIDEOS, failed: str | None = None, hive: bool = False
) -> Path:
    for t in ("frames", "videos", "errors"):
        (root / t).mkdir(parents=True, exist_ok=True)
    for v, n in videos.items():
        rows = [
            dict(video_id=v, frame_idx=i, **frame_ms(scale, i), tokens_kept=int(4096 * keep), tokens_total=4096,
                 memory_bank_bytes=int(min(i + 1, 4) * MB * keep), memory_bytes=int((1000 + 10 * i) * MB * keep))
            for i in range(n)
        ]  # fmt: skip
        folder = root / "frames" / "day=2026-11-23" if hive else root / "frames"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table_from_rows("frames", rows), folder / f"{v}.parquet")
        video = dict(video_id=v, uri=f"s3://videos/{v}.mp4", status="done", num_frames=n, num_objects=1,
                     keep_ratio=keep, run_id=root.name, finished_at=WHEN)  # fmt: skip
        pq.write_table(table_from_rows("videos", [video]), root / "videos" / f"{v}.parquet")
    if failed:
        err = dict(video_id=failed, uri=f"s3://videos/{failed}.mp4", stage="decode", error_type="ValueError",
                   message="corrupt stream", run_id=root.name, failed_at=WHEN)  # fmt: skip
        pq.write_table(table_from_rows("errors", [err]), root / "errors" / f"{failed}.parquet")
    return root


def write_eval(run: Path, scores: dict[tuple[str, int], tuple[float, float]], n: int = 4) -> None:
    """Eval rows as ``eval --out RUN/eval`` writes them: constant J, F per (sequence, object)."""
    rows = [
        dict(pred=str(run.resolve()), pred_label=run.name, gt="/gt", sequence=s, obj_id=o, frame_idx=t,
             frame=f"{t:05d}", J=j, F=f)
        for (s, o), (j, f) in scores.items()
        for t in range(1, n + 1)
    ]  # fmt: skip
    (run / "eval").mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCORES_SCHEMA), run / "eval" / "scores.parquet")


DENSE_EVAL = {("car-shadow", 1): (0.9, 0.8), ("dog", 1): (0.7, 0.6), ("dog", 2): (0.5, 0.4)}
PRUNED_EVAL = {("car-shadow", 1): (0.88, 0.79), ("dog", 1): (0.66, 0.6), ("dog", 2): (0.5, 0.3)}


def chromium() -> str | None:
    """The headless browser the HTML checks run in, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with ``args`` (skips the test where none is installed)."""
    exe = chromium()
    if exe is None:
        pytest.skip("chromium not installed (apt-get install -y chromium; .ci/run installs it)")
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}"]  # fmt: skip
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)
