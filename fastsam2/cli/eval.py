"""``fastsam2-batch eval``: DAVIS J&F of runs or PNG predictions, printed, as JSON, as Parquet."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence

import click
from rich.console import Console
from rich.table import Table

from fastsam2.eval.evaluate import MEASURES, EvalResult, evaluate, results_json, write_scores
from fastsam2.cli.storage_options import storage_options_option
from fastsam2.eval.io import EvalError, read_run_table
from fastsam2.storage import fs_and_path


def _console(stderr: bool = False) -> Console:
    # Not a terminal (CI logs, CliRunner): keep tables wide instead of wrapping them.
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 200, highlight=False)


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


RANDOM_JF = "random weights: meaningless"


def _random_weights(uri: str, storage_options: dict | None = None) -> bool:
    """Whether a run's videos/ rows say it had random weights (a PNG folder never says so)."""
    try:
        t = read_run_table(uri, "videos", columns=["random_weights"], storage_options=storage_options)
    except (OSError, EvalError):
        return False
    return t is not None and any(t["random_weights"].to_pylist())


def _parse_sequences(value: str | None, storage_options: dict | None = None) -> list[str] | None:
    """Comma-separated names, or a file with one name per line (e.g. ImageSets/2016/val.txt)."""
    if not value:
        return None
    if "," not in value and (value.endswith(".txt") or "/" in value):
        fs, path = fs_and_path(value, storage_options)
        if not fs.exists(path):
            raise EvalError(f"sequence list not found: {value}")
        with fs.open(path, "r") as fh:
            return [line.strip() for line in fh if line.strip()]
    return [s.strip() for s in value.split(",") if s.strip()]


def single_table(res: EvalResult) -> Table:
    """Per-sequence rows (means over the sequence's objects), then the global row."""
    table = Table(title=f"DAVIS J&F - {res.label}", title_justify="left")
    table.add_column("Sequence")
    table.add_column("Obj", justify="right")
    for m in MEASURES:
        table.add_column(m, justify="right")
    for name, seq in res.sequences.items():
        vals = res.sequence_metrics(name)
        table.add_row(name, str(len(seq.objects)), *[_fmt(vals[m]) for m in MEASURES])
    g = res.global_metrics()
    table.add_section()
    table.add_row("Global", str(len(res.objects)), *[_fmt(g[m]) for m in MEASURES], style="bold")
    return table


def compare_table(results: Sequence[EvalResult]) -> Table:
    """Side by side: J&F, J and F of every source per sequence, and each one's difference to the first."""
    base = results[0]
    table = Table(title="DAVIS J&F - " + " vs ".join(r.label for r in results), title_justify="left")
    table.add_column("Sequence")
    for key in ("J&F-Mean", "J-Mean", "F-Mean"):
        short = key.replace("-Mean", "")
        for r in results:
            table.add_column(f"{short}\n{r.label}", justify="right")
        for r in results[1:]:
            table.add_column(f"Δ{short}" + (f"\n{r.label}" if len(results) > 2 else ""), justify="right")
    names = [n for n in base.sequences if all(n in r.sequences for r in results)]

    def cells(getter) -> list[str]:
        out = []
        for key in ("J&F-Mean", "J-Mean", "F-Mean"):
            vals = [getter(r)[key] for r in results]
            out += [_fmt(v) for v in vals]
            out += [_fmt(v - vals[0], signed=True) for v in vals[1:]]
        return out

    for n in names:
        table.add_row(n, *cells(lambda r, n=n: r.sequence_metrics(n)))
    table.add_section()
    table.add_row("Global", *cells(lambda r: r.global_metrics()), style="bold")
    return table


def global_compare_table(results: Sequence[EvalResult]) -> Table:
    table = Table(title="Global measures", title_justify="left")
    table.add_column("Predictions")
    for m in MEASURES:
        table.add_column(m, justify="right")
    base = results[0].global_metrics()
    for r in results:
        g = r.global_metrics()
        table.add_row(r.label, *[_fmt(g[m]) for m in MEASURES])
    for r in results[1:]:
        g = r.global_metrics()
        table.add_row(f"Δ {r.label} - {results[0].label}", *[_fmt(g[m] - base[m], signed=True) for m in MEASURES])
    return table


@click.command("eval")
@click.option(
    "--gt", "gt_root", required=True, help="DAVIS root: ROOT/Annotations/480p/<seq>/<frame>.png (local or s3://)."
)
@click.option(
    "--pred", "preds", multiple=True, required=True,
    help="A run's output root (masks/*.parquet) or a folder of <seq>/<frame>.png. Repeat to compare side by side.",
)  # fmt: skip
@click.option("--json", "json_path", help="Write global and per-sequence measures as JSON (values in [0, 1]).")
@click.option("--out", "out_uri", help="Write per-object per-frame J and F as Parquet (a .parquet file, or a folder).")
@click.option("--sequences", help="Only these sequences: comma-separated, or a file with one per line.")
@click.option(
    "--bound-th",
    type=float,
    default=0.008,
    show_default=True,
    help="Boundary tolerance (fraction of the diagonal, or pixels if >= 1).",
)
@click.option(
    "--void", type=click.Choice(["background", "ignore"]), default="background", show_default=True,
    help="255 pixels: background as the official semi-supervised evaluation, or excluded from J and F.",
)  # fmt: skip
@click.option("--strict", is_flag=True, help="Fail if a prediction source lacks a ground-truth sequence.")
@click.option(
    "--legacy-decay-bins",
    is_flag=True,
    help="Reproduce the official uint8 wrap of decay bins (sequences > 256 frames).",
)
@storage_options_option
def eval_command(
    gt_root: str,
    preds: tuple[str, ...],
    json_path: str | None,
    out_uri: str | None,
    sequences: str | None,
    bound_th: float,
    void: str,
    strict: bool,
    legacy_decay_bins: bool,
    storage_options: dict | None,
) -> None:
    """Score predictions against DAVIS ground truth with J and F exactly as DAVIS 2017 defines them."""
    out = _console()
    err = _console(stderr=True)
    if bound_th <= 0:
        raise click.BadParameter("must be > 0", param_hint="--bound-th")
    start = time.perf_counter()
    try:
        results = evaluate(
            gt_root, list(preds), _parse_sequences(sequences, storage_options), bound_th=bound_th,
            void=void, strict=strict, legacy_uint8=legacy_decay_bins, storage_options=storage_options,
        )  # fmt: skip
    except (EvalError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    elapsed = time.perf_counter() - start
    random = [r.label for uri, r in zip(preds, results) if _random_weights(uri, storage_options)]

    if len(results) == 1:
        out.print(single_table(results[0]))
    else:
        out.print(compare_table(results))
        out.print(global_compare_table(results))
    for label in random:
        out.print(f"[bold red]{label}: made with RANDOM WEIGHTS ({RANDOM_JF})[/]")
    for r in results:
        if r.missing_sequences:
            err.print(
                f"[yellow]warning:[/] {r.label}: {len(r.missing_sequences)} ground-truth sequence(s) without "
                f"predictions, not scored: {', '.join(r.missing_sequences)}"
            )
        if r.missing_masks:
            err.print(
                f"[yellow]warning:[/] {r.label}: {r.missing_masks} (object, frame) mask(s) missing, scored as empty"
            )
    n_frames = sum(len(s.frames) for s in results[0].sequences.values())
    err.print(f"{len(results[0].sequences)} sequences, {n_frames} scored frames, {elapsed:.1f} s")

    try:
        if json_path:
            fs, path = fs_and_path(json_path, storage_options)
            with fs.open(path, "w") as fh:
                json.dump(results_json(results), fh, indent=2, allow_nan=False)
            err.print(f"wrote {json_path}")
        if out_uri:
            err.print(f"wrote {write_scores(results, out_uri, storage_options)}")
    except (OSError, EvalError) as exc:
        raise click.ClickException(f"cannot write output: {exc}") from None
