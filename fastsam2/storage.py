"""Object storage: a filesystem from a URI, atomic Parquet writes, which videos are done.

The one storage layer of the house: the pipeline, ``eval``, ``report`` and
``export`` all reach files through it, so a URI means the same everywhere.
Local paths, ``file://``, ``s3://`` and ``s3a://`` (Spark's spelling of the
same bucket) URIs go through fsspec. For S3 the standard AWS
variables are honoured (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) and ``storage_options``
(the ``--storage-options`` JSON) are passed to ``s3fs.S3FileSystem``; every
function that touches storage takes them.

Atomicity: a local file is written to a temp name and renamed; an S3 object
appears only when its upload completes. Either way a reader never sees half a
file, so a crash mid-run leaves only whole per-video files behind.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)
T = TypeVar("T")


#: URI schemes served by s3fs (``s3a`` is how Spark and Hadoop spell ``s3``).
S3_SCHEMES = ("s3://", "s3a://")


def is_remote(uri: str) -> bool:
    uri = str(uri)
    return "://" in uri and not uri.startswith("file://")


def strip_protocol(uri: str) -> str:
    uri = str(uri)
    return uri.split("://", 1)[1] if "://" in uri else uri


def normalize_uri(uri: str) -> str:
    """``file:///abs/path`` (or ``file://rel``) -> the plain local path; other URIs unchanged."""
    uri = str(uri)
    return uri[len("file://"):] if uri.startswith("file://") else uri


def canonical_uri(uri: str) -> str:
    """One spelling per location, to match rows that name a location (eval's ``pred``) to runs.

    ``s3a://b/x/`` -> ``s3://b/x``; a local path (or ``file://`` URI) -> absolute and resolved.
    """
    uri = str(uri)
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        return f"{'s3' if scheme == 's3a' else scheme}://{rest.strip('/')}"
    return str(Path(normalize_uri(uri)).expanduser().resolve())


def filesystem_for(uri: str, storage_options: dict[str, Any] | None = None) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem that serves ``uri``."""
    uri = str(uri)
    opts = dict(storage_options or {})
    if uri.startswith(S3_SCHEMES):
        import s3fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint and "endpoint_url" not in opts and "client_kwargs" not in opts:
            opts["endpoint_url"] = endpoint
        # Fresh listings each time: we check for done videos between runs.
        opts.setdefault("use_listings_cache", False)
        return s3fs.S3FileSystem(**opts)
    if is_remote(uri):
        protocol = uri.split("://", 1)[0]
        return fsspec.filesystem(protocol, **opts)
    return fsspec.filesystem("file", auto_mkdir=True)


def fs_and_path(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path to use with it.

    Remote: the URI without its protocol (and trailing ``/``); local: the absolute
    path, ``~`` expanded, so listings of it return paths that start with it.
    """
    fs = filesystem_for(uri, storage_options)
    if is_remote(uri):
        return fs, strip_protocol(uri).rstrip("/")
    return fs, str(Path(normalize_uri(uri)).expanduser().absolute())


def join(root: str, *parts: str) -> str:
    """``root/part/part``: one ``/`` between the pieces whatever slashes they carry."""
    return "/".join([str(root).rstrip("/"), *(p.strip("/") for p in parts)])


#: OS errors no retry can fix: a full or read-only disk, a name too long, no permission.
PERMANENT_ERRNOS = frozenset({errno.ENOSPC, errno.ENAMETOOLONG, errno.EROFS, errno.EDQUOT,
                              errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENOENT})


def is_permanent(exc: BaseException) -> bool:
    """True for I/O errors that a retry cannot fix."""
    if isinstance(exc, (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return True
    return isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNOS


def with_retries(fn: Callable[[], T], what: str, attempts: int = 4, base_delay: float = 0.5) -> T:
    """Run ``fn``, retrying transient I/O errors with exponential backoff.

    Object stores fail transiently (throttling, resets); losing a finished
    video's masks to one such error would waste minutes of GPU time. Errors in
    :data:`PERMANENT_ERRNOS` are raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except OSError as exc:
            if is_permanent(exc) or attempt == attempts:
                raise
            delay = base_delay * 2 ** (attempt - 1)
            log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what, type(exc).__name__, exc, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def write_parquet_atomic(table: pa.Table, uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``table`` to ``uri`` so that readers see the whole file or nothing."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    data = buf.getvalue()
    fs = filesystem_for(uri, storage_options)
    path = strip_protocol(uri) if is_remote(uri) else os.path.abspath(strip_protocol(uri))

    def _write() -> None:
        if is_remote(uri):
            fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
        else:
            _replace_local(path, data)

    with_retries(_write, f"write {uri}")


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def write_bytes_atomic(data: bytes, uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Write small bytes (e.g. the run settings file) so readers see all or nothing."""
    fs = filesystem_for(uri, storage_options)
    if is_remote(uri):
        with_retries(lambda: fs.pipe_file(strip_protocol(uri), data), f"write {uri}")
        return
    _replace_local(os.path.abspath(strip_protocol(uri)), data)


def _replace_local(path: str, data: bytes) -> None:
    """Write through a hidden temp file and rename: readers see the old file or the whole new one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)  # no debris on a full disk, a kill signal, anything
        raise


def delete_if_exists(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    fs = filesystem_for(uri, storage_options)
    path = strip_protocol(uri)
    try:
        if fs.exists(path):
            fs.rm(path)
    except FileNotFoundError:
        pass


def parquet_files(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The Parquet files of a dataset folder, recursively (flat or hive-partitioned), sorted.

    Names under ``path`` that start with ``.`` or ``_`` are skipped, as Arrow's and
    Spark's dataset readers do: our writers' temp files while they commit, Spark's
    ``_temporary/`` and ``_SUCCESS``, ``_metadata``.
    """
    try:
        if not fs.exists(path):
            return []
        found = fs.find(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    root = path.rstrip("/")
    return sorted(p for p in found if p.endswith(".parquet")
                  and not any(part.startswith((".", "_")) for part in p[len(root):].split("/") if part))


def list_parquet(root: str, table: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Paths (without protocol) of the Parquet files of one table of a run root, hive subfolders included."""
    fs, base = fs_and_path(join(root, table), storage_options)
    return parquet_files(fs, base)


def recorded_ids(root: str, table: str, storage_options: dict[str, Any] | None = None) -> dict[str, str]:
    """``{uri: video_id}`` as stored in the rows of ``videos/`` or ``errors/`` (never from file names)."""
    rows = read_table(root, table, storage_options, columns=["uri", "video_id"]).to_pylist()
    return {r["uri"]: r["video_id"] for r in rows if r["uri"] is not None and r["video_id"] is not None}


def done_video_ids(root: str, storage_options: dict[str, Any] | None = None) -> set[str]:
    """Videos whose ``videos/`` row exists (written last, so they are complete), by their stored id."""
    ids = read_table(root, "videos", storage_options, columns=["video_id"]).column("video_id").to_pylist()
    return {i for i in ids if i is not None}


def read_table(root: str, table: str, storage_options: dict[str, Any] | None = None,
               columns: list[str] | None = None) -> pa.Table:
    """Read every file of one output table into one Arrow table (empty if none)."""
    from fastsam2.schema import SCHEMAS

    files = list_parquet(root, table, storage_options)
    if not files:
        empty = SCHEMAS[table].empty_table()
        return empty.select(columns) if columns else empty
    if not is_remote(root):  # ParquetFile, not read_table: no dataset machinery per small file
        return pa.concat_tables([pq.ParquetFile(f).read(columns=columns) for f in files], promote_options="default")
    fs = filesystem_for(root, storage_options)

    def read_one(path: str) -> pa.Table:
        with fs.open(path, "rb") as f:
            return pq.ParquetFile(f).read(columns=columns)

    return pa.concat_tables(read_many(files, read_one), promote_options="default")


def read_many(files: list[str], read_one: Callable[[str], T], max_threads: int = 16) -> list[T]:
    """``read_one`` over ``files``, several at once, results in order.

    One small file per video: on S3 latency, not bandwidth, dominates (the resume
    check reads every videos/ and errors/ file of a root; eval every masks/ file).
    """
    if len(files) <= 1:
        return [read_one(f) for f in files]
    with ThreadPoolExecutor(max_workers=min(max_threads, len(files))) as pool:
        return list(pool.map(read_one, files))
