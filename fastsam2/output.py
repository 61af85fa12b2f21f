"""Write one video's tables to the run's output root, atomically and idempotently.

Order matters: ``masks/`` and ``frames/`` first, then any ``errors/`` file of an
earlier failure is removed, ``videos/`` last. A video counts as done only once its
``videos/`` file exists, so a crash between the writes leaves a video that the
next run redoes (overwriting the same file names: no duplicates). A failure
removes partial ``masks/``/``frames/`` of an earlier crashed attempt.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from fastsam2.storage import delete_if_exists, join, write_parquet_atomic


def table_uri(root: str, table: str, video_id: str) -> str:
    return join(root, table, f"{video_id}.parquet")


def write_video(root: str, video_id: str, tables: dict[str, pa.Table], storage_options: dict[str, Any] | None = None) -> None:
    """Write ``tables`` (``masks``, ``frames``, ``videos``; or ``errors``) for one video."""
    if "errors" in tables:
        # Rows of an earlier attempt that crashed before videos/ must not outlive this failure.
        for name in ("masks", "frames"):
            delete_if_exists(table_uri(root, name, video_id), storage_options)
        write_parquet_atomic(tables["errors"], table_uri(root, "errors", video_id), storage_options)
        return
    write_parquet_atomic(tables["masks"], table_uri(root, "masks", video_id), storage_options)
    write_parquet_atomic(tables["frames"], table_uri(root, "frames", video_id), storage_options)
    delete_if_exists(table_uri(root, "errors", video_id), storage_options)  # before the done marker
    write_parquet_atomic(tables["videos"], table_uri(root, "videos", video_id), storage_options)


def to_ipc(table: pa.Table) -> bytes:
    """Arrow IPC bytes: how a video's rows travel from the tracking actor to the writer."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
