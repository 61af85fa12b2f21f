"""Where exports go: local paths or ``s3://`` (through :mod:`fastsam2.storage`), plus counts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from fastsam2.export.source import RunVideo
from fastsam2.storage import filesystem_for, join, strip_protocol, with_retries


@dataclass
class ExportStats:
    output: str
    videos: int = 0
    objects: int = 0
    frames: int = 0
    random_weights: bool = False

    def add_video(self, video: RunVideo) -> None:
        self.videos += 1
        self.frames += video.num_frames
        self.random_weights |= bool(video.info.get("random_weights"))


@contextlib.contextmanager
def open_text(uri: str, storage_options: dict | None = None) -> Iterator[IO[str]]:
    """A text file opened for writing (parent folders made); on S3 it appears once closed."""
    fs = filesystem_for(uri, storage_options)
    path = strip_protocol(uri)
    with fs.open(path, "w", encoding="utf-8") as fh:
        yield fh


def put_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    fs = filesystem_for(uri, storage_options)
    path = strip_protocol(uri)

    with_retries(lambda: fs.pipe_file(path, data), f"write {uri}")


__all__ = ["ExportStats", "open_text", "put_bytes", "join"]
