"""Write one video's tables to the run's output root, atomically and idempotently.

Order matters: ``masks/``, ``frames/`` and ``objects/`` first, then any ``errors/`` file of an
earlier failure is removed, ``videos/`` last. A video counts as done only once its
``videos/`` file exists, so a crash between the writes leaves a video that the
next run redoes (overwriting the same file names: no duplicates). A failure
removes partial ``masks/``/``frames/`` of an earlier crashed attempt.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pyarrow as pa

from fastsam2.storage import delete_if_exists, is_remote, join, strip_protocol, write_parquet_atomic
from fastsam2.video_ids import is_safe_id

log = logging.getLogger(__name__)


#: Per-video tables written before the videos/ done marker (and removed when the video fails).
ROWS_BEFORE_DONE = ("masks", "frames", "objects")


class UnsafeOutputPath(ValueError):
    """A video id that would write outside the output root (never produced by our id function)."""


def table_uri(root: str, table: str, video_id: str) -> str:
    """Where one video's rows of ``table`` go; refuses any id that is not a plain safe name."""
    if not is_safe_id(video_id):
        raise UnsafeOutputPath(f"refusing to write video id {video_id!r}: not a safe file name")
    uri = join(root, table, f"{video_id}.parquet")
    if not is_remote(root):  # defence in depth: the resolved path must stay under the root
        base = os.path.realpath(strip_protocol(root))
        if os.path.commonpath([base, os.path.realpath(strip_protocol(uri))]) != base:
            raise UnsafeOutputPath(f"refusing to write {uri}: outside the output root {root}")
    return uri


def _discard_rows(root: str, video_id: str, storage_options: dict[str, Any] | None) -> None:
    """Remove masks/, frames/ and objects/ rows of a video that is not done, so readers never count them."""
    for name in ROWS_BEFORE_DONE:
        try:
            delete_if_exists(table_uri(root, name, video_id), storage_options)
        except Exception as exc:  # noqa: BLE001 - best effort on a failure path; the original error wins
            log.error("could not remove %s/%s.parquet after a failed write: %s", name, video_id, exc)


def write_video(root: str, video_id: str, tables: dict[str, pa.Table], storage_options: dict[str, Any] | None = None) -> None:
    """Write ``tables`` (``masks``, ``frames``, ``videos``; or ``errors``) for one video.

    Any failure before the ``videos/`` file exists removes this video's ``masks/``
    and ``frames/`` files again: a video is either done or has no rows to count.
    """
    if "errors" in tables:
        # Rows of an earlier attempt that crashed before videos/ must not outlive this failure.
        for name in ROWS_BEFORE_DONE:
            delete_if_exists(table_uri(root, name, video_id), storage_options)
        write_parquet_atomic(tables["errors"], table_uri(root, "errors", video_id), storage_options)
        return
    masks_uri = table_uri(root, "masks", video_id)  # checks the id before anything is written
    try:
        write_parquet_atomic(tables["masks"], masks_uri, storage_options)
        write_parquet_atomic(tables["frames"], table_uri(root, "frames", video_id), storage_options)
        if "objects" in tables:
            write_parquet_atomic(tables["objects"], table_uri(root, "objects", video_id), storage_options)
        delete_if_exists(table_uri(root, "errors", video_id), storage_options)  # before the done marker
        write_parquet_atomic(tables["videos"], table_uri(root, "videos", video_id), storage_options)
    except BaseException:
        _discard_rows(root, video_id, storage_options)
        raise


def to_ipc(table: pa.Table) -> bytes:
    """Arrow IPC bytes: how a video's rows travel from the tracking actor to the writer."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
