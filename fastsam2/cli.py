"""The ``fastsam2-batch`` command line: run, submit, status, stop, demo, eval, report, train-router.

Every command builds a :class:`~fastsam2.config.JobConfig` (flags override
``--config FILE``) and hands it to the library; errors in what the user gave
come back as one line naming the cause, not a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from fastsam2.config import JobConfig, deep_merge

RANDOM_BANNER = (
    "!! RANDOM WEIGHTS: no trained checkpoint was used; masks, boxes and captions are meaningless. "
    "Use this run for plumbing and speed only. !!"
)


def _floats(value: str | None, n: int, name: str) -> list[float] | None:
    if value is None:
        return None
    try:
        out = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{name} takes {n} comma-separated numbers, got {value!r}") from None
    if len(out) != n:
        raise click.BadParameter(f"{name} takes {n} comma-separated numbers, got {value!r}")
    return out


def job_options(fn):
    """Options shared by ``run`` and ``submit``: they describe the same job."""
    options = [
        click.option("--output", "-o", help="Output root: local path or s3://bucket/prefix."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="YAML job config (flags override it)."),
        click.option("--sam2-config", help="SAM2 model config, e.g. sam2.1_hiera_t (default), sam2.1_hiera_l."),
        click.option("--sam2-checkpoint", help="Checkpoint path or URI; default: the official one, downloaded once."),
        click.option("--random-weights", is_flag=True, default=None, help="No checkpoints at all (smoke tests, demos): every model gets random weights."),
        click.option("--image-size", type=int, help="SAM2 input size (multiple of 16; default 1024)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where models run (default auto)."),
        click.option("--point", help="First-frame click X,Y for every video (manifest columns override per video)."),
        click.option("--box", help="First-frame box X0,Y0,X1,Y1 for every video."),
        click.option("--text", help="Object phrase for every video (skips captioning)."),
        click.option("--prompts", type=click.Choice(["auto", "user"]), help="auto: propose a prompt where none is given (default)."),
        click.option("--keep-ratio", type=float, help="Fraction of tokens kept for memory attention (1.0 = dense)."),
        click.option("--router-weights", help="Trained router MLP weights (from train-router)."),
        click.option("--caption-backend", type=click.Choice(["vllm", "openai", "transformers", "none"])),
        click.option("--caption-model", help="Captioning model (default llava-hf/llava-1.5-7b-hf)."),
        click.option("--caption-endpoint", help="OpenAI-compatible endpoint URL for --caption-backend openai."),
        click.option("--max-frames", type=int, help="Track at most this many frames per video."),
        click.option("--storage-options", help="JSON of fsspec/s3fs options, e.g. '{\"anon\": false}'."),
        click.option("--track-gpus", type=float, help="GPUs per SAM2 actor (fractional allowed)."),
        click.option("--track-actors", type=int, help="Maximum number of SAM2 actors."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def build_config(inputs: tuple[str, ...], **kw: Any) -> JobConfig:
    """Merge ``--config FILE`` with the flags into a validated :class:`JobConfig`."""
    point = _floats(kw.get("point"), 2, "--point")
    box = _floats(kw.get("box"), 4, "--box")
    storage_options = None
    if kw.get("storage_options"):
        try:
            storage_options = json.loads(kw["storage_options"])
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"--storage-options is not valid JSON: {exc}") from None
    prompts_mode = kw.get("prompts")
    if prompts_mode is None and (point or box):
        prompts_mode = "user"
    track: dict[str, Any] = {}
    if kw.get("track_gpus") is not None:
        track["num_gpus"] = kw["track_gpus"]
    if kw.get("track_actors") is not None:
        track["max_actors"] = kw["track_actors"]
    flags = {
        "inputs": list(inputs) or None,
        "output": kw.get("output"),
        "storage_options": storage_options,
        "max_frames": kw.get("max_frames"),
        "model": {
            "sam2_config": kw.get("sam2_config"),
            "sam2_checkpoint": kw.get("sam2_checkpoint"),
            "random_weights": kw.get("random_weights"),
            "image_size": kw.get("image_size"),
            "device": kw.get("device"),
        },
        "pruning": {"keep_ratio": kw.get("keep_ratio"), "router_weights": kw.get("router_weights")},
        "prompts": {
            "mode": prompts_mode,
            "point": point,
            "box": box,
            "text": kw.get("text"),
            "caption_backend": kw.get("caption_backend"),
            "caption_model": kw.get("caption_model"),
            "caption_endpoint": kw.get("caption_endpoint"),
        },
        "resources": {"track": track} if track else None,
    }
    base: dict = {}
    if kw.get("config_file"):
        import yaml

        base = yaml.safe_load(Path(kw["config_file"]).read_text()) or {}
    data = deep_merge(base, flags)
    if not data.get("inputs"):
        raise click.UsageError("give at least one INPUT (video file, frame folder, dataset folder, glob or manifest)")
    if not data.get("output"):
        raise click.UsageError("--output is required (a local path or s3://bucket/prefix)")
    if "resources" in data and "track" in data["resources"] and isinstance(data["resources"]["track"], dict):
        from fastsam2.config import _default_resources

        defaults = {k: v.model_dump() for k, v in _default_resources().items()}
        data["resources"] = deep_merge(defaults, data["resources"])
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(f"invalid job config: {problems}") from None


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
    console.print(f"Results: {summary.output}/  (masks/, frames/, videos/, errors/ as Parquet)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log more.")
@click.version_option(package_name="fastsam2-batch")
def main(verbose: bool) -> None:
    """Auto-label video datasets with SAM2, fast: Ray pipeline, token pruning, masks to Parquet."""
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


def _run(cfg: JobConfig, address: str | None = None) -> None:
    from fastsam2.pipeline import run_pipeline
    from fastsam2.sources import InputError

    try:
        summary = run_pipeline(cfg, progress=sys.stderr.isatty(), address=address)
    except InputError as exc:
        raise click.ClickException(str(exc)) from None
    print_summary(summary)


@main.command()
@click.argument("inputs", nargs=-1)
@job_options
def run(inputs: tuple[str, ...], **kw: Any) -> None:
    """Label INPUT videos locally (starts or joins a local Ray instance)."""
    cfg = build_config(inputs, **kw)
    _check_weights(cfg)
    _run(cfg)


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
    _run(cfg)
    from fastsam2.eval.evaluate import evaluate

    scores = evaluate(str(out / "samples"), [cfg.output])[0].global_metrics()
    click.echo(f"J&F-Mean against the samples' ground truth: {scores['J&F-Mean']:.3f} "
               f"(J {scores['J-Mean']:.3f}, F {scores['F-Mean']:.3f})"
               + ("  [random weights: expect noise]" if cfg.model.random_weights else ""))
    click.echo(f"Inspect: fastsam2-batch report {out / 'results'}   |   "
               f"fastsam2-batch eval --gt {out / 'samples'} --pred {out / 'results'}")


def _register_optional_commands() -> None:
    """Commands that live next to their library code."""
    from importlib import import_module

    for module, attr in (
        ("fastsam2.eval.cli", "eval_command"),
        ("fastsam2.report.cli", "report_command"),
        ("fastsam2.tracking.cli", "train_router_command"),
        ("fastsam2.submit", "submit_command"),
        ("fastsam2.submit", "status_command"),
        ("fastsam2.submit", "stop_command"),
    ):
        try:
            main.add_command(getattr(import_module(module), attr))
        except (ImportError, AttributeError):
            continue


_register_optional_commands()
