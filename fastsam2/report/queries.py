"""DuckDB analytics over one or more runs' Parquet output.

Why Arrow in between: DuckDB's httpfs extension cannot be downloaded in CI or in
air-gapped clusters, so run tables are read with pyarrow (+ s3fs for ``s3://``,
hive folders included) and registered in an in-memory DuckDB.  The SQL below is
the same a user would run on the files directly (see the README one-liners).

Tables registered (each with a ``run`` column, the run's short label):
``frames``, ``videos``, ``errors`` (the run schemas) and ``eval`` (per-object
per-frame J/F written by ``fastsam2-batch eval --out``).

Definitions:
- ms per frame = total ``ms_total`` / frames (frame-weighted), fps = 1000 / that;
  component ms likewise, from ``frames``; ``videos`` is the fallback.
- speed-up = baseline ms per frame / run ms per frame, over the videos both runs
  finished; memory saving = 1 - run / baseline (memory-bank peak, peak memory).
- J&F = mean over objects of (J-Mean + F-Mean) / 2, as DAVIS.
- random weights: a run (video) counts as random-weight when any of its
  ``videos`` rows says so; its masks, and so its J&F, are meaningless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from fastsam2.eval.evaluate import SCORES_SCHEMA
from fastsam2.eval.io import EvalError, read_parquet_dir, read_run_table, unique_labels
from fastsam2.schema import COMPONENTS, SCHEMAS
from fastsam2.storage import canonical_uri, fs_and_path, join, parquet_files

MS_COLUMNS = [f"ms_{c}" for c in COMPONENTS]

#: What every renderer says next to a J&F of a random-weight run.
RANDOM_JF = "random weights: meaningless"
#: The mark next to a random-weight run's name in tables, legends and labels.
RANDOM_MARK = "RANDOM WEIGHTS"


@dataclass
class Run:
    uri: str
    label: str
    key: str  # normalised URI, matched against eval rows' ``pred``


@dataclass
class Report:
    """Query results, as lists of dict rows, ready for the terminal and HTML renderers."""

    runs: list[Run]
    baseline: str  # label of the baseline run
    run_rows: list[dict] = field(default_factory=list)
    video_rows: list[dict] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)
    memory_series: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    has_eval: bool = False

    @property
    def random_runs(self) -> list[str]:
        """Labels of the runs made with random weights (meaningless masks and J&F)."""
        return [r["run"] for r in self.run_rows if r.get("random_weights")]


def _with_run(table: pa.Table, label: str) -> pa.Table:
    return table.append_column("run", pa.array([label] * table.num_rows, pa.string()))


def _empty(schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([], schema=schema.append(pa.field("run", pa.string())))


def _eval_rows(runs: list[Run], extra_eval: Sequence[str], storage_options: dict | None = None) -> pa.Table:
    """Eval scores for the runs: from ``<run>/eval/`` and any extra files/folders.

    Rows are matched to runs by their ``pred`` URI.  Rows found inside a run's own
    ``eval/`` folder whose single ``pred`` matches no run (the run was moved or
    copied to S3 after eval) are attributed to that run.
    """
    by_key = {r.key: r.label for r in runs}
    found: list[tuple[pa.Table, str | None]] = []
    for r in runs:
        t = read_parquet_dir(join(r.uri, "eval"), schema=SCORES_SCHEMA, columns=SCORES_SCHEMA.names,
                             storage_options=storage_options)
        if t is not None:
            found.append((t, r.label))
    for uri in extra_eval:
        fs, path = fs_and_path(uri, storage_options)
        if not fs.exists(path):
            raise EvalError(f"eval results not found: {uri}")
        t = read_parquet_dir(uri, schema=SCORES_SCHEMA, columns=SCORES_SCHEMA.names, storage_options=storage_options)
        if t is None and fs.isfile(path):
            import pyarrow.parquet as pq

            with fs.open(path, "rb") as fh:
                t = pq.read_table(fh).select(SCORES_SCHEMA.names).cast(SCORES_SCHEMA)
        if t is not None:
            found.append((t, None))
    parts = []
    for t, owner in found:
        preds = pc.unique(t["pred"]).to_pylist()
        for p in preds:
            label = by_key.get(canonical_uri(p) if p else "")
            if label is None and owner is not None and len(preds) == 1:
                label = owner
            if label is None:
                continue
            parts.append(_with_run(t.filter(pc.equal(t["pred"], p)), label))
    if not parts:
        return _empty(SCORES_SCHEMA)
    return pa.concat_tables(parts)


def connect(runs: list[Run], extra_eval: Sequence[str] = (),
            storage_options: dict | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the runs' tables registered (see module docstring)."""
    con = duckdb.connect()
    for table in ("frames", "videos", "errors"):
        parts = []
        for r in runs:
            t = read_run_table(r.uri, table, storage_options=storage_options)
            if t is not None:
                parts.append(_with_run(t.select(SCHEMAS[table].names), r.label))
        arrow = pa.concat_tables(parts) if parts else _empty(SCHEMAS[table])
        con.register(table, arrow)
    con.register("eval", _eval_rows(runs, extra_eval, storage_options))
    con.register("runs", pa.table({"run": [r.label for r in runs], "uri": [r.uri for r in runs]}))
    return con


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


_COMPONENT_AVG = ",\n".join(f"    sum({c}) / count({c}) AS {c}" for c in MS_COLUMNS)
_COMPONENT_COALESCE = ",\n".join(f"  coalesce(f.{c}, v.{c}) AS {c}" for c in MS_COLUMNS)

#: One row per (run, video): efficiency from ``frames`` (fallback ``videos``), errors, J&F.
PER_VIDEO_SQL = f"""
CREATE OR REPLACE TEMP VIEW per_video AS
WITH f AS (
  SELECT run, video_id,
    count(*) AS frames,
    sum(ms_total) AS ms_sum,
{_COMPONENT_AVG},
    avg(tokens_kept::DOUBLE / nullif(tokens_total, 0)) AS tokens_kept,
    max(memory_bank_bytes) AS memory_bank_bytes,
    avg(memory_bank_bytes) AS memory_bank_bytes_mean,
    max(memory_bytes) AS peak_memory_bytes
  FROM frames GROUP BY run, video_id
), v AS (
  SELECT run, video_id,
    any_value(status) AS status, any_value(keep_ratio) AS keep_ratio,
    bool_or(coalesce(random_weights, false)) AS random_weights,
    any_value(num_frames) AS num_frames, any_value(num_objects) AS num_objects,
    any_value(ms_per_frame) AS ms_per_frame,
    {", ".join(f"any_value({c}) AS {c}" for c in MS_COLUMNS)},
    any_value(tokens_kept) AS tokens_kept,
    any_value(memory_bank_bytes) AS memory_bank_bytes,
    any_value(peak_memory_bytes) AS peak_memory_bytes
  FROM videos GROUP BY run, video_id
), e AS (
  SELECT run, video_id, count(*) AS errors,
    string_agg(DISTINCT coalesce(stage, '?') || ': ' || coalesce(error_type, '?'), '; ') AS error_summary
  FROM errors GROUP BY run, video_id
), o AS (
  SELECT run, sequence AS video_id, obj_id, avg(J) AS j_mean, avg(F) AS f_mean
  FROM (SELECT DISTINCT run, gt, sequence, obj_id, frame_idx, J, F FROM eval)
  GROUP BY run, sequence, obj_id
), j AS (
  SELECT run, video_id, avg(j_mean) AS j_mean, avg(f_mean) AS f_mean,
    (avg(j_mean) + avg(f_mean)) / 2 AS jf_mean, count(*) AS eval_objects
  FROM o GROUP BY run, video_id
), k AS (
  SELECT run, video_id FROM f UNION SELECT run, video_id FROM v UNION SELECT run, video_id FROM e
)
SELECT k.run, k.video_id,
  coalesce(v.status, CASE WHEN e.errors > 0 THEN 'failed' END) AS status,
  v.keep_ratio, coalesce(v.random_weights, false) AS random_weights, v.num_objects,
  coalesce(f.frames, v.num_frames) AS frames,
  coalesce(f.ms_sum / f.frames, v.ms_per_frame) AS ms_per_frame,
  1000.0 / coalesce(f.ms_sum / f.frames, v.ms_per_frame) AS fps,
{_COMPONENT_COALESCE},
  coalesce(f.tokens_kept, v.tokens_kept) AS tokens_kept,
  coalesce(f.memory_bank_bytes, v.memory_bank_bytes) AS memory_bank_bytes,
  f.memory_bank_bytes_mean,
  coalesce(v.peak_memory_bytes, f.peak_memory_bytes) AS peak_memory_bytes,
  coalesce(e.errors, 0) AS errors, e.error_summary,
  j.j_mean, j.f_mean, j.jf_mean
FROM k
LEFT JOIN f USING (run, video_id)
LEFT JOIN v USING (run, video_id)
LEFT JOIN e USING (run, video_id)
LEFT JOIN j USING (run, video_id)
"""

#: Per video, against the baseline run's same video.
VIDEO_VS_BASELINE_SQL = """
SELECT r.*,
  b.ms_per_frame / r.ms_per_frame AS speedup,
  1 - r.memory_bank_bytes::DOUBLE / nullif(b.memory_bank_bytes, 0) AS memory_bank_saving,
  1 - r.peak_memory_bytes::DOUBLE / nullif(b.peak_memory_bytes, 0) AS peak_memory_saving,
  r.jf_mean - b.jf_mean AS jf_delta
FROM per_video r
LEFT JOIN per_video b ON b.run = $baseline AND b.video_id = r.video_id AND b.ms_per_frame IS NOT NULL
ORDER BY list_position($order, r.run), r.video_id
"""

#: One row per run; speed-up and savings over the videos finished by both runs.
PER_RUN_SQL = f"""
WITH ok AS (SELECT * FROM per_video WHERE ms_per_frame IS NOT NULL AND frames > 0),
agg AS (
  SELECT run,
    count(*) AS videos,
    avg(keep_ratio) AS keep_ratio,
    bool_or(random_weights) AS random_weights,
    sum(frames) AS frames,
    sum(ms_per_frame * frames) / sum(frames) AS ms_per_frame,
    {", ".join(f"sum({c} * frames) / sum(CASE WHEN {c} IS NOT NULL THEN frames END) AS {c}" for c in MS_COLUMNS)},
    sum(tokens_kept * frames) / sum(CASE WHEN tokens_kept IS NOT NULL THEN frames END) AS tokens_kept,
    max(memory_bank_bytes) AS memory_bank_bytes,
    avg(memory_bank_bytes) AS memory_bank_bytes_per_video,
    max(peak_memory_bytes) AS peak_memory_bytes
  FROM ok GROUP BY run
), err AS (
  SELECT run, count(DISTINCT video_id) AS failed_videos, count(*) AS errors FROM errors GROUP BY run
), o AS (
  SELECT run, sequence, obj_id, avg(J) AS j_mean, avg(F) AS f_mean
  FROM (SELECT DISTINCT run, gt, sequence, obj_id, frame_idx, J, F FROM eval)
  GROUP BY run, sequence, obj_id
), jf AS (
  SELECT run, avg(j_mean) AS j_mean, avg(f_mean) AS f_mean, (avg(j_mean) + avg(f_mean)) / 2 AS jf_mean,
    count(DISTINCT sequence) AS eval_sequences
  FROM o GROUP BY run
), vs AS (
  SELECT r.run,
    (sum(b.ms_per_frame * b.frames) / sum(b.frames)) / (sum(r.ms_per_frame * r.frames) / sum(r.frames)) AS speedup,
    1 - avg(r.memory_bank_bytes)::DOUBLE / nullif(avg(b.memory_bank_bytes), 0) AS memory_bank_saving,
    1 - max(r.peak_memory_bytes)::DOUBLE / nullif(max(b.peak_memory_bytes), 0) AS peak_memory_saving,
    count(*) AS common_videos
  FROM ok r JOIN ok b ON b.run = $baseline AND b.video_id = r.video_id
  GROUP BY r.run
)
SELECT runs.run, runs.uri, runs.run = $baseline AS is_baseline,
  agg.videos, coalesce(agg.random_weights, false) AS random_weights,
  coalesce(err.failed_videos, 0) AS failed_videos, coalesce(err.errors, 0) AS errors,
  agg.keep_ratio, agg.frames, agg.ms_per_frame, 1000.0 / agg.ms_per_frame AS fps,
  {", ".join(f"agg.{c}" for c in MS_COLUMNS)},
  agg.tokens_kept, agg.memory_bank_bytes, agg.memory_bank_bytes_per_video, agg.peak_memory_bytes,
  vs.speedup, vs.memory_bank_saving, vs.peak_memory_saving, vs.common_videos,
  jf.j_mean, jf.f_mean, jf.jf_mean, jf.eval_sequences,
  jf.jf_mean - (SELECT jf_mean FROM jf WHERE run = $baseline) AS jf_delta
FROM runs
LEFT JOIN agg USING (run) LEFT JOIN err USING (run) LEFT JOIN vs USING (run) LEFT JOIN jf USING (run)
ORDER BY list_position($order, runs.run)
"""

#: Memory over the video, for the "memory per frame" plot.
MEMORY_SERIES_SQL = """
SELECT run, video_id, frame_idx, memory_bank_bytes, memory_bytes
FROM frames ORDER BY list_position($order, run), video_id, frame_idx
"""

ERRORS_SQL = """
SELECT run, video_id, stage, error_type, message, failed_at::VARCHAR AS failed_at  -- no pytz needed
FROM errors ORDER BY list_position($order, run), video_id
"""


def build_report(run_uris: Sequence[str], baseline: str | None = None, extra_eval: Sequence[str] = (),
                 storage_options: dict | None = None) -> Report:
    """Read the runs, run the queries, return everything the renderers need.

    The baseline defaults to the first run; a ``baseline`` not among the runs is
    added to them. ``storage_options`` (as ``--storage-options``) reach every ``s3://`` read.
    """
    uris = list(dict.fromkeys(run_uris))
    if not uris:
        raise EvalError("no run given")
    if baseline is not None and canonical_uri(baseline) not in {canonical_uri(u) for u in uris}:
        uris.append(baseline)
    for u in uris:
        fs, path = fs_and_path(u, storage_options)
        if not fs.isdir(path):
            raise EvalError(f"run not found: {u}")
        if not any(parquet_files(fs, join(path, t)) for t in ("frames", "videos", "errors")):
            raise EvalError(f"{u} has no frames/, videos/ or errors/ Parquet: not a run output")
    labels = unique_labels(uris)
    runs = [Run(u, lab, canonical_uri(u)) for u, lab in zip(uris, labels)]
    base_key = canonical_uri(baseline) if baseline else runs[0].key
    base_label = next(r.label for r in runs if r.key == base_key)

    con = connect(runs, extra_eval, storage_options)
    order = [r.label for r in runs]
    params = {"baseline": base_label, "order": order}
    con.execute(PER_VIDEO_SQL)
    report = Report(runs=runs, baseline=base_label)
    report.video_rows = _rows(con, VIDEO_VS_BASELINE_SQL, params)
    report.run_rows = _rows(con, PER_RUN_SQL, params)
    report.memory_series = _rows(con, MEMORY_SERIES_SQL, {"order": order})
    report.errors = _rows(con, ERRORS_SQL, {"order": order})
    report.components = [{"run": row["run"], **{c: row[f"ms_{c}"] for c in COMPONENTS}} for row in report.run_rows]
    report.has_eval = con.execute("SELECT count(*) FROM eval").fetchone()[0] > 0
    con.close()
    return report


#: DuckDB one-liners users can run themselves on a run's output (also in the README
#: and at the end of the HTML report).  ``{run}``, ``{dense}``, ``{pruned}`` are run roots.
ONE_LINERS = (
    (
        "Speed, tokens kept and memory-bank peak per video:",
        "SELECT video_id, count(*) AS frames, 1000 * count(*) / sum(ms_total) AS fps, "
        "avg(tokens_kept / tokens_total) AS tokens_kept, max(memory_bank_bytes) / 2^20 AS bank_mb "
        "FROM read_parquet('{run}/frames/**/*.parquet') GROUP BY video_id ORDER BY fps",
    ),
    (
        "Speed-up of a pruned run over a dense run, per video:",
        "SELECT video_id, sum(d.ms_total) / sum(p.ms_total) AS speedup "
        "FROM read_parquet('{dense}/frames/**/*.parquet') d "
        "JOIN read_parquet('{pruned}/frames/**/*.parquet') p USING (video_id, frame_idx) "
        "GROUP BY video_id ORDER BY speedup",
    ),
    (
        "J&F per sequence from eval --out scores:",
        "SELECT sequence, (avg(J) + avg(F)) / 2 AS jf FROM read_parquet('{run}/eval/**/*.parquet') "
        "GROUP BY sequence ORDER BY jf",
    ),
)


def one_liners(run_uris: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The one-liners with real run locations filled in (placeholders if not enough runs)."""
    uris = [str(u).rstrip("/") for u in run_uris]
    run = uris[-1] if uris else "OUT"
    dense = uris[0] if len(uris) > 1 else "DENSE"
    pruned = uris[1] if len(uris) > 1 else "PRUNED"
    return [(what, sql.format(run=run, dense=dense, pruned=pruned)) for what, sql in ONE_LINERS]
