"""The ``fastsam2-batch`` command line: run, submit, status, stop, demo, eval, report, train-router.

Every command builds a :class:`~fastsam2.config.JobConfig` (flags override
``--config FILE``) and hands it to the library; errors in what the user gave
come back as one line naming the cause, not a traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from fastsam2.cli_options import build_config, job_options
from fastsam2.config import JobConfig
from fastsam2.eval.cli import eval_command
from fastsam2.report.cli import report_command
from fastsam2.submit import status_command, stop_command, submit_command
from fastsam2.tracking.cli import train_router_command

RANDOM_BANNER = (
    "!! RANDOM WEIGHTS: no trained checkpoint was used; masks, boxes and captions are meaningless. "
    "Use this run for plumbing and speed only. !!"
)


def print_summary(summary) -> None:
    from rich.console import Console

    console = Console(stderr=False)
    if summary.random_weights:
        console.print(f"[bold red]{RANDOM_BANNER}[/]")
    console.print(
        f"[bold]{summary.ok}[/] video(s) labelled, [bold]{summary.failed}[/] failed, "
        f"{summary.skipped} already done (of {summary.total}); {summary.masks} mask rows written."
    )
    for err in summary.errors:
        console.print(f"  [red]error[/] {err}")
    console.print(f"Results: {summary.output}/  (masks/, frames/, objects/, videos/, errors/ as Parquet)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.version_option(package_name="fastsam2-batch")
def main(verbose: bool) -> None:
    """Auto-label video datasets with SAM2, fast: Ray pipeline, token pruning, masks to Parquet.

    Exit status of run and demo: 0 every video ok or already done; 3 some video failed
    (see errors/); 2 the run could not start (bad input, config, output or weights).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _check_weights(cfg: JobConfig) -> None:
    """Fail fast on the driver when no checkpoint can be had (instead of in every actor)."""
    if cfg.model.random_weights:
        return
    from fastsam2.models.sam2 import WeightsUnavailable, fetch_checkpoint

    try:
        fetch_checkpoint(cfg.model.sam2_config, cfg.model.sam2_checkpoint, cfg.storage_options)
    except WeightsUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # unknown --sam2-config
        raise SetupFailed(f"--sam2-config: {exc}") from None


class SetupFailed(click.ClickException):
    """The run could not start (bad input, output root, weights): one line, exit 2 as run_job.py."""

    exit_code = 2


def _run(cfg: JobConfig, address: str | None = None) -> int:
    """Run the job, print its summary; the exit status (:func:`fastsam2.pipeline.exit_code`)."""
    from fastsam2.pipeline import exit_code, run_pipeline
    from fastsam2.sources import InputError

    try:
        summary = run_pipeline(cfg, progress=True, address=address)
    except InputError as exc:
        raise SetupFailed(str(exc)) from None
    print_summary(summary)
    return exit_code(summary)


@main.command()
@click.argument("inputs", nargs=-1)
@job_options
def run(inputs: tuple[str, ...], **kw: Any) -> None:
    """Label INPUT videos locally (starts or joins a local Ray instance)."""
    cfg = build_config(inputs, **kw)
    _check_weights(cfg)
    sys.exit(_run(cfg))


@main.command()
@click.option("--output", "-o", default="demo-output", show_default=True, help="Where samples and results go.")
@click.option("--image-size", type=int, default=512, show_default=True)
@click.option("--frames", "num_frames", type=int, default=12, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--random-weights", is_flag=True, help="Skip trying to download the SAM2 checkpoint.")
def demo(output: str, image_size: int, num_frames: int, device: str, random_weights: bool) -> None:
    """Make a few synthetic sample videos and label them end to end (local Ray)."""
    from fastsam2.demo import make_samples

    out = Path(output).resolve()
    manifest = make_samples(out / "samples", num_frames=num_frames)
    cfg = JobConfig(inputs=[str(manifest)], output=str(out / "results"),
                    model={"image_size": image_size, "device": device, "random_weights": random_weights},
                    prompts={"mode": "user"})
    if not cfg.model.random_weights:
        from fastsam2.models.sam2 import WeightsUnavailable, fetch_checkpoint

        try:
            fetch_checkpoint(cfg.model.sam2_config)
        except WeightsUnavailable as exc:
            click.secho(f"{exc}\nThe demo goes on with random weights.", fg="yellow", err=True)
            cfg.model.random_weights = True
    click.echo(f"Sample videos (with ground truth): {out / 'samples'}")
    code = _run(cfg)
    from fastsam2.eval.evaluate import evaluate

    scores = evaluate(str(out / "samples"), [cfg.output])[0].global_metrics()
    click.echo(f"J&F-Mean against the samples' ground truth: {scores['J&F-Mean']:.3f} "
               f"(J {scores['J-Mean']:.3f}, F {scores['F-Mean']:.3f})"
               + ("  [random weights: expect noise]" if cfg.model.random_weights else ""))
    click.echo(f"Inspect: fastsam2-batch report {out / 'results'}   |   "
               f"fastsam2-batch eval --gt {out / 'samples'} --pred {out / 'results'}")
    sys.exit(code)


for _command in (eval_command, report_command, train_router_command, submit_command, status_command, stop_command):
    main.add_command(_command)
