"""Read a finished run back, one video at a time, for the exporters.

A run writes one ``masks/<video_id>.parquet`` per video (see :mod:`fastsam2.output`),
so reading file by file holds one video's RLE strings in memory at a time,
never the whole run. Only videos with a ``videos/`` row (the done marker) are
exported; masks of a video whose run crashed before that row are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from fastsam2.storage import filesystem_for, is_remote, list_parquet, read_table, strip_protocol


class ExportError(ValueError):
    """A run that cannot be exported (not found, no finished video): shown as one line."""


@dataclass
class MaskRow:
    rle: str
    area: int
    bbox: list[float]  # x0, y0, x1, y1 (exclusive)
    score: float


@dataclass
class RunVideo:
    """One finished video: its ``videos/`` row and its masks by object, then frame."""

    video_id: str
    info: dict[str, Any]
    height: int
    width: int
    num_frames: int
    objects: dict[int, dict[int, MaskRow]] = field(default_factory=dict)  # obj_id -> frame_idx -> row

    @property
    def phrase(self) -> str | None:
        """What the object is called: the user's text, else the refined caption."""
        return self.info.get("text") or self.info.get("caption") or None


def _video_rows(run: str, storage_options: dict | None) -> dict[str, dict]:
    try:
        table = read_table(run, "videos", storage_options)
    except FileNotFoundError:
        raise ExportError(f"run not found: {run}") from None
    return {r["video_id"]: r for r in table.to_pylist()}


def iter_run(run: str, storage_options: dict | None = None, videos: list[str] | None = None) -> Iterator[RunVideo]:
    """Yield every finished video of ``run`` (local path or ``s3://``), in video-id order."""
    fs = filesystem_for(run, storage_options)
    root = run if is_remote(run) else os.path.abspath(run)
    if not fs.exists(strip_protocol(root)):
        raise ExportError(f"run not found: {run}")
    info = _video_rows(root, storage_options)
    if not info:
        raise ExportError(f"{run} has no finished video (no videos/*.parquet): nothing to export")
    wanted = set(videos) if videos else None
    if wanted is not None and (unknown := sorted(wanted - set(info))):
        raise ExportError(f"not among the finished videos of {run}: {', '.join(unknown)}")
    files: dict[str, list[str]] = {}
    for path in list_parquet(root, "masks", storage_options):
        files.setdefault(os.path.basename(path)[: -len(".parquet")], []).append(path)
    for video_id in sorted(info):
        if wanted is not None and video_id not in wanted:
            continue
        row = info[video_id]
        video = RunVideo(video_id, row, int(row.get("height") or 0), int(row.get("width") or 0),
                         int(row.get("num_frames") or 0))
        for path in files.get(video_id, []):
            with fs.open(path, "rb") as fh:
                cols = pq.read_table(fh, columns=["video_id", "obj_id", "frame_idx", "height", "width", "rle",
                                                  "area", "bbox", "score"]).to_pydict()
            for i, vid in enumerate(cols["video_id"]):
                if vid != video_id:
                    continue
                video.height, video.width = int(cols["height"][i]), int(cols["width"][i])
                video.objects.setdefault(int(cols["obj_id"][i]), {})[int(cols["frame_idx"][i])] = MaskRow(
                    cols["rle"][i], int(cols["area"][i]), list(cols["bbox"][i] or [0, 0, 0, 0]),
                    float(cols["score"][i] or 0.0))
        video.objects = dict(sorted(video.objects.items()))
        frames = [f for per_obj in video.objects.values() for f in per_obj]
        video.num_frames = max(video.num_frames, max(frames, default=-1) + 1)
        yield video
