"""``run`` and ``demo``: label videos on a local (or joined) Ray instance."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fastsam2.cli.options import build_config, job_options
from fastsam2.config import JobConfig


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
    """The run could not start (bad input, output root, weights): one line, exit 2 as ``python -m fastsam2.job``."""

    exit_code = 2


def _run(cfg: JobConfig, address: str | None = None) -> int:
    """Run the job, print its summary; the exit status (:func:`fastsam2.pipeline.exit_code`)."""
    from fastsam2.pipeline import exit_code, print_summary, run_pipeline
    from fastsam2.placement import PlacementError
    from fastsam2.sources import InputError

    try:
        summary = run_pipeline(cfg, progress=True, address=address)
    except (InputError, PlacementError) as exc:
        raise SetupFailed(str(exc)) from None
    print_summary(summary)
    return exit_code(summary)


@click.command()
@click.argument("inputs", nargs=-1)
@job_options
@click.option("--dry-run", is_flag=True, help="List the videos found, those already done, prompts, stages and "
                                              "resources; start nothing.")
def run(inputs: tuple[str, ...], dry_run: bool, **kw: Any) -> None:
    """Label INPUT videos locally (starts or joins a local Ray instance); --output is required.

    INPUT: a video file, a folder of frames, a folder or s3:// prefix of videos (DAVIS
    JPEGImages/480p/<seq>/ too), a glob ('data/*.mp4') or a manifest (.csv/.jsonl/.parquet
    with a uri column and optional video_id, obj_id, point, box, text). Repeatable.
    """
    cfg = build_config(inputs, **kw)
    if dry_run:
        from fastsam2.dry_run import plan, print_plan
        from fastsam2.sources import InputError

        try:
            print_plan(plan(cfg))
        except InputError as exc:
            raise click.ClickException(str(exc)) from None
        return
    _check_weights(cfg)
    sys.exit(_run(cfg))


@click.command()
@click.option("--output", "-o", default="demo-output", show_default=True, help="Where samples and results go.")
@click.option("--image-size", type=int, default=512, show_default=True, help="SAM2 input size (multiple of 16).")
@click.option("--frames", "num_frames", type=int, default=12, show_default=True, help="Frames per sample video.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where models run (auto: CUDA when present).")
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
