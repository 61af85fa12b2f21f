"""Reading run tables and scores for eval and report, on top of :mod:`fastsam2.storage`.

Storage itself (filesystems, ``s3``/``s3a``, ``storage_options``, joins,
listings, atomic writes) lives in :mod:`fastsam2.storage`, as for the pipeline;
what stays here is what only eval and report need: reading a whole folder of
Parquet into one table conformed to a schema (hive keys as columns, row
filters applied per file), short labels for locations, and :class:`EvalError`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fastsam2.schema import SCHEMAS
from fastsam2.storage import fs_and_path, join, parquet_files, read_many

_READ_THREADS = 8


class EvalError(Exception):
    """Bad input to eval/report: shown to the user as one line, without a traceback."""


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


def _hive_values(root: str, path: str) -> dict[str, str]:
    rel = path[len(root) :].strip("/").split("/")[:-1]
    return dict(part.split("=", 1) for part in rel if "=" in part)


def read_parquet_dir(
    uri: str,
    columns: list[str] | None = None,
    schema: pa.Schema | None = None,
    row_filter: Callable[[pa.Table], pa.Table] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pa.Table | None:
    """Read every Parquet file under ``uri`` into one table; None when there are none.

    Hive partition values (``key=value`` folders) become string columns when the
    files themselves lack that column.  When ``schema`` is given, columns are cast
    to it, so tables read from different writers concatenate cleanly.  ``row_filter``
    is applied file by file, so only the wanted rows are ever held in memory.
    """
    fs, root = fs_and_path(uri, storage_options)
    files = parquet_files(fs, root)
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

    return pa.concat_tables(read_many(files, read_one, _READ_THREADS), promote_options="permissive")


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
    storage_options: dict[str, Any] | None = None,
) -> pa.Table | None:
    """One table (masks/frames/videos/errors) of a run root, with the project schema."""
    return read_parquet_dir(join(run_uri, table), columns=columns, schema=SCHEMAS.get(table), row_filter=row_filter,
                            storage_options=storage_options)
