"""Tiny storage layer for eval and report: local paths and ``s3://`` through fsspec.

Why private and small: the pipeline's own storage helper lives elsewhere and may
change; eval/report only need to list, read and write Parquet/PNG files.  S3 goes
through s3fs, honouring ``AWS_ENDPOINT_URL`` and the standard AWS variables, so
the same code reads a MinIO bucket, real S3 or the moto server the tests start.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from fastsam2.schema import SCHEMAS

_READ_THREADS = 8


class EvalError(Exception):
    """Bad input to eval/report: shown to the user as one line, without a traceback."""


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def filesystem(uri: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for a URI and the path to use with it."""
    uri = str(uri)
    opts = dict(storage_options or {})
    if uri.startswith(("s3://", "s3a://")):
        import s3fs

        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint and "endpoint_url" not in opts:
            opts["endpoint_url"] = endpoint
        fs = s3fs.S3FileSystem(**opts)
        return fs, uri.split("://", 1)[1].rstrip("/")
    if is_remote(uri):
        fs, path = fsspec.core.url_to_fs(uri, **opts)
        return fs, path.rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return fsspec.filesystem("file"), str(Path(uri).expanduser().absolute())


def normalize_uri(uri: str) -> str:
    """A canonical spelling of a run/prediction location, used to match eval rows to runs."""
    uri = str(uri)
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        return f"{'s3' if scheme == 's3a' else scheme}://{rest.strip('/')}"
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return str(Path(uri).expanduser().resolve())


def display_name(uri: str) -> str:
    """Short label for tables: the last path component."""
    return posixpath.basename(str(uri).rstrip("/")) or str(uri)


def unique_labels(uris: list[str]) -> list[str]:
    """Distinct short labels for several locations (falls back to the full URI on clashes)."""
    labels = [display_name(u) for u in uris]
    if len(set(labels)) == len(labels):
        return labels
    # Use as many trailing components as needed to make them differ.
    for depth in range(2, 8):
        labels = ["/".join(str(u).rstrip("/").split("/")[-depth:]) for u in uris]
        if len(set(labels)) == len(labels):
            return labels
    return [str(u) for u in uris]


def list_parquet(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """Parquet files under ``root``, recursively (flat or hive-partitioned), sorted."""
    if not fs.exists(root):
        return []
    files = [p for p in fs.find(root) if p.endswith(".parquet")]
    # Skip temp/hidden files a writer may leave while committing atomically.
    files = [p for p in files if not any(part.startswith((".", "_")) for part in p[len(root) :].split("/") if part)]
    return sorted(files)


def _hive_values(root: str, path: str) -> dict[str, str]:
    rel = path[len(root) :].strip("/").split("/")[:-1]
    return dict(part.split("=", 1) for part in rel if "=" in part)


def read_parquet_dir(
    uri: str,
    columns: list[str] | None = None,
    schema: pa.Schema | None = None,
    row_filter: Callable[[pa.Table], pa.Table] | None = None,
) -> pa.Table | None:
    """Read every Parquet file under ``uri`` into one table; None when there are none.

    Hive partition values (``key=value`` folders) become string columns when the
    files themselves lack that column.  When ``schema`` is given, columns are cast
    to it, so tables read from different writers concatenate cleanly.  ``row_filter``
    is applied file by file, so only the wanted rows are ever held in memory.
    """
    fs, root = filesystem(uri)
    files = list_parquet(fs, root)
    if not files:
        return None

    def read_one(path: str) -> pa.Table:
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            want = None if columns is None else [c for c in columns if c in names]
            t = pf.read(columns=want)
        for key, value in _hive_values(root, path).items():
            if key not in t.column_names and (columns is None or key in columns):
                t = t.append_column(key, pa.array([value] * t.num_rows, pa.string()))
        if schema is not None:
            t = _conform(t, schema, columns)
        return t if row_filter is None else row_filter(t)

    # One file per video: on S3 the latency, not the bandwidth, dominates, so read a few at once.
    with ThreadPoolExecutor(_READ_THREADS) as ex:
        tables = list(ex.map(read_one, files))
    return pa.concat_tables(tables, promote_options="permissive")


def _conform(t: pa.Table, schema: pa.Schema, columns: list[str] | None) -> pa.Table:
    """Add missing schema columns as nulls and cast known ones to the schema's types."""
    names = columns if columns is not None else schema.names
    arrays, fields = [], []
    for name in names:
        if name in schema.names:
            field = schema.field(name)
            if name in t.column_names:
                arrays.append(t[name].cast(field.type))
            else:
                arrays.append(pa.nulls(t.num_rows, field.type))
            fields.append(field)
        elif name in t.column_names:
            arrays.append(t[name])
            fields.append(pa.field(name, t[name].type))
    for name in t.column_names:  # keep extra columns (e.g. hive keys) when reading everything
        if columns is None and name not in schema.names:
            arrays.append(t[name])
            fields.append(pa.field(name, t[name].type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def read_run_table(
    run_uri: str,
    table: str,
    columns: list[str] | None = None,
    row_filter: Callable[[pa.Table], pa.Table] | None = None,
) -> pa.Table | None:
    """One table (masks/frames/videos/errors) of a run root, with the project schema."""
    return read_parquet_dir(join(run_uri, table), columns=columns, schema=SCHEMAS.get(table), row_filter=row_filter)


def join(uri: str, *parts: str) -> str:
    uri = str(uri).rstrip("/")
    return "/".join([uri, *[p.strip("/") for p in parts]])


def write_parquet(table: pa.Table, uri: str) -> str:
    """Write one Parquet file (local or s3://), creating parent folders; returns the URI."""
    fs, path = filesystem(uri)
    parent = posixpath.dirname(path)
    if parent and not is_remote(uri):
        fs.makedirs(parent, exist_ok=True)
    tmp = path if is_remote(uri) else posixpath.join(parent, f".{posixpath.basename(path)}.tmp")
    with fs.open(tmp, "wb") as fh:
        pq.write_table(table, fh)
    if tmp != path:
        os.replace(tmp, path)  # atomic on local disks: readers never see half a file
    return uri
