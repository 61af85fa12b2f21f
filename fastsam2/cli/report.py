"""``fastsam2-batch report``: efficiency and accuracy of runs, in the terminal and as HTML."""

from __future__ import annotations

import json
import math
import sys

import click
from rich.console import Console
from rich.table import Table

from fastsam2.cli.storage_options import storage_options_option
from fastsam2.eval.io import EvalError
from fastsam2.report.html import MB, render_html
from fastsam2.report.queries import RANDOM_JF, RANDOM_MARK, Report, build_report, one_liners
from fastsam2.schema import COMPONENTS
from fastsam2.storage import fs_and_path


def _f(v, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return fmt.format(v / scale if scale != 1 else v)


def _pct(v) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:+.1f}%"


def _run(name: str, random_weights: bool) -> str:
    return f"{name} [bold red]\\[{RANDOM_MARK}][/]" if random_weights else name


def _jf(v, random_weights: bool, fmt: str = "{:.3f}") -> str:
    """A J&F cell; for random weights the number is withheld (it is in --json and the HTML)."""
    text = _f(v, fmt)
    return f"[red]{RANDOM_JF}[/]" if random_weights and text != "-" else text


def random_banner(report: Report) -> str | None:
    """One red line naming the random-weight runs, printed above the tables."""
    if not report.random_runs:
        return None
    return (f"[bold red]{RANDOM_MARK}: {', '.join(report.random_runs)} used no trained checkpoint: masks and J&F "
            "are meaningless; speed and memory are still measured.[/]")


def runs_table(report: Report) -> Table:
    t = Table(title=f"Runs (baseline: {report.baseline})", title_justify="left")
    for h in ("Run", "Keep", "Videos", "Failed", "Frames", "FPS", "ms/frame", "Speed-up", "Tokens kept",
              "Bank MB", "Bank saving", "Peak MB", "Peak saving", "J&F", "ΔJ&F"):  # fmt: skip
        t.add_column(h, justify="left" if h == "Run" else "right", no_wrap=h in ("Run", "J&F", "ΔJ&F"))
    for r in report.run_rows:
        t.add_row(
            _run(r["run"], r["random_weights"]) + (" *" if r["is_baseline"] else ""), _f(r["keep_ratio"]),
            _f(r["videos"], "{:d}"),
            _f(r["failed_videos"], "{:d}"), _f(r["frames"], "{:d}"), _f(r["fps"], "{:.1f}"),
            _f(r["ms_per_frame"], "{:.1f}"), _f(r["speedup"], "{:.2f}x"), _f(r["tokens_kept"]),
            _f(r["memory_bank_bytes"], "{:.1f}", MB), _pct(r["memory_bank_saving"]),
            _f(r["peak_memory_bytes"], "{:.0f}", MB), _pct(r["peak_memory_saving"]),
            _jf(r["jf_mean"], r["random_weights"]), _jf(r["jf_delta"], _rw_delta(report, r), "{:+.3f}"),
        )  # fmt: skip
    return t


def _rw_delta(report: Report, row: dict) -> bool:
    return bool(row["random_weights"]) or report.baseline in report.random_runs


def components_table(report: Report) -> Table:
    t = Table(title="ms per frame by component", title_justify="left")
    t.add_column("Run")
    for c in (*COMPONENTS, "total"):
        t.add_column(c, justify="right")
    for r in report.run_rows:
        t.add_row(_run(r["run"], r["random_weights"]), *[_f(r[f"ms_{c}"]) for c in COMPONENTS], _f(r["ms_per_frame"]))
    return t


def videos_table(report: Report) -> Table:
    t = Table(title="Videos", title_justify="left")
    for h in ("Run", "Video", "Status", "Frames", "FPS", "ms/frame", "Speed-up", "Tokens kept",
              "Bank MB", "Peak MB", "J&F", "Errors"):  # fmt: skip
        t.add_column(h, justify="left" if h in ("Run", "Video", "Status", "Errors") else "right",
                     no_wrap=h in ("Run", "J&F"))
    for r in report.video_rows:
        t.add_row(
            _run(r["run"], r["random_weights"]), str(r["video_id"]), str(r["status"] or ""), _f(r["frames"], "{:d}"),
            _f(r["fps"], "{:.1f}"),
            _f(r["ms_per_frame"], "{:.1f}"), _f(r["speedup"], "{:.2f}x"), _f(r["tokens_kept"]),
            _f(r["memory_bank_bytes"], "{:.1f}", MB), _f(r["peak_memory_bytes"], "{:.0f}", MB),
            _jf(r["jf_mean"], r["random_weights"]), (r["error_summary"] or "") if r["errors"] else "",
        )  # fmt: skip
    return t


def _json_default(v):
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _clean(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]


@click.command("report")
@click.argument("runs", nargs=-1, required=True, metavar="RUN_URI...")
@click.option("--html", "html_path", help="Write a self-contained HTML report (tables and plots) to this file.")
@click.option("--baseline", help="Run to compare against (speed-up, memory saving, ΔJ&F). Default: the first RUN_URI.")
@click.option(
    "--eval", "eval_uris", multiple=True, help="Extra eval scores (eval --out) besides RUN/eval/. Repeatable."
)
@click.option("--json", "json_path", help="Write the per-run and per-video rows as JSON.")
@click.option("--videos/--no-videos", default=True, show_default=True, help="Print the per-video table.")
@storage_options_option
def report_command(
    runs: tuple[str, ...],
    html_path: str | None,
    baseline: str | None,
    eval_uris: tuple[str, ...],
    json_path: str | None,
    videos: bool,
    storage_options: dict | None,
) -> None:
    """Summarise runs with DuckDB over their Parquet output (local or s3://)."""
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
    try:
        report = build_report(list(runs), baseline, list(eval_uris), storage_options)
    except EvalError as exc:
        raise click.ClickException(str(exc)) from None
    if banner := random_banner(report):
        console.print(banner)
    console.print(runs_table(report))
    console.print(components_table(report))
    if videos:
        console.print(videos_table(report))
    if report.errors:
        console.print(f"[red]{len(report.errors)} error row(s)[/]: see the Videos table or errors/*.parquet")
    try:
        if html_path:
            fs, path = fs_and_path(html_path, storage_options)
            with fs.open(path, "w", encoding="utf-8") as fh:
                fh.write(render_html(report, one_liners([r.uri for r in report.runs])))
            console.print(f"wrote {html_path}")
        if json_path:
            fs, path = fs_and_path(json_path, storage_options)
            doc = {"baseline": report.baseline, "runs": _clean(report.run_rows), "videos": _clean(report.video_rows)}
            with fs.open(path, "w") as fh:
                json.dump(doc, fh, indent=2, default=_json_default)
            console.print(f"wrote {json_path}")
    except OSError as exc:
        raise click.ClickException(f"cannot write output: {exc}") from None
