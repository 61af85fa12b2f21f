"""Job options shared by ``run`` and ``submit``, and the JobConfig they build.

Kept apart from the command group so ``fastsam2.submit`` can use them without
importing the CLI module that registers it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from fastsam2.config import JobConfig, StageResources, deep_merge, default_resources, describe_validation_error


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
        click.option("--keep-ratio", type=float, help="Fraction of tokens memory attention keeps (default 0.3; 1.0 = dense, stock SAM2)."),
        click.option("--semantic", type=click.Choice(["clip", "paper", "none"]), help="Router text relevance (default clip)."),
        click.option("--uncertainty", type=click.Choice(["closed_form", "mc", "none"]), help="Router uncertainty (default closed_form)."),
        click.option("--mc-passes", type=int, help="Sampled MC dropout passes with --uncertainty mc (default 5)."),
        click.option("--router-weights", help="Trained router MLP weights (from train-router)."),
        click.option("--caption-backend", type=click.Choice(["vllm", "openai", "transformers", "none"])),
        click.option("--caption-model", help="Captioning model (default llava-hf/llava-1.5-7b-hf)."),
        click.option("--caption-endpoint", help="OpenAI-compatible endpoint URL for --caption-backend openai."),
        click.option("--max-frames", type=click.IntRange(min=1), help="Track at most this many frames per video."),
        click.option("--storage-options", help="JSON of fsspec/s3fs options, e.g. '{\"anon\": false}'."),
        click.option("--track-gpus", type=float, help="GPUs per SAM2 actor (fractional allowed)."),
        click.option("--track-actors", type=int, help="Maximum number of SAM2 actors."),
        click.option("--resource", "resource_overrides", multiple=True, metavar="STAGE.FIELD=VALUE",
                     help="Per-stage resources, repeatable: e.g. propose.num_gpus=0.25, track.max_actors=8, "
                          "caption.batch_size=16 (stages: propose, caption, track, write)."),
        click.option("--detector-weights", help="RPN weights: a file, or 'default' for torchvision's cache."),
        click.option("--min-objectness", type=float, help="Lowest RPN objectness accepted for an auto box (default 0.5)."),
        click.option("--max-objects", type=click.IntRange(min=1), help="Auto prompts: track up to K distinct objects per video (default 5)."),
        click.option("--detect-every", type=click.IntRange(min=1), help="Look for objects that enter later every N frames (default: off)."),
        click.option("--bidirectional", is_flag=True, default=None, help="Also track objects found after the first frame back to it (a second, reverse pass)."),
        click.option("--allow-mixed-settings", is_flag=True, default=None,
                     help="Add to an --output whose earlier runs used other settings (normally refused)."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    return fn


def _resource_overrides(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("propose.num_gpus=0.25", ...)`` -> ``{"propose": {"num_gpus": 0.25}}``."""
    out: dict[str, dict[str, Any]] = {}
    fields = StageResources.model_fields
    for item in items:
        key, sep, value = item.partition("=")
        stage, dot, name = key.strip().partition(".")
        if not sep or not dot or name not in fields:
            raise click.BadParameter(
                f"--resource takes STAGE.FIELD=VALUE with FIELD one of {sorted(fields)}, got {item!r}")
        try:
            out.setdefault(stage, {})[name] = float(value) if "." in value else int(value)
        except ValueError:
            raise click.BadParameter(f"--resource {key} needs a number, got {value!r}") from None
    return out


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
    resources = _resource_overrides(kw.get("resource_overrides") or ())
    track = resources.setdefault("track", {})
    if kw.get("track_gpus") is not None:
        track["num_gpus"] = kw["track_gpus"]
    if kw.get("track_actors") is not None:
        track["max_actors"] = kw["track_actors"]
    flags = {
        "inputs": list(inputs) or None,
        "output": kw.get("output"),
        "storage_options": storage_options,
        "max_frames": kw.get("max_frames"),
        "allow_mixed_settings": kw.get("allow_mixed_settings"),
        "model": {
            "sam2_config": kw.get("sam2_config"),
            "sam2_checkpoint": kw.get("sam2_checkpoint"),
            "random_weights": kw.get("random_weights"),
            "image_size": kw.get("image_size"),
            "device": kw.get("device"),
        },
        "pruning": {"keep_ratio": kw.get("keep_ratio"), "router_weights": kw.get("router_weights"),
                    "semantic": kw.get("semantic"), "uncertainty": kw.get("uncertainty"), "mc_passes": kw.get("mc_passes")},
        "prompts": {
            "mode": prompts_mode,
            "point": point,
            "box": box,
            "text": kw.get("text"),
            "caption_backend": kw.get("caption_backend"),
            "caption_model": kw.get("caption_model"),
            "caption_endpoint": kw.get("caption_endpoint"),
            "detector_weights": kw.get("detector_weights"),
            "min_objectness": kw.get("min_objectness"),
            "max_objects": kw.get("max_objects"),
            "detect_every": kw.get("detect_every"),
            "bidirectional": kw.get("bidirectional"),
        },
        "resources": {k: v for k, v in resources.items() if v} or None,
    }
    base: dict = {}
    if kw.get("config_file"):
        base = _read_yaml(kw["config_file"])
    data = deep_merge(base, flags)
    if not data.get("inputs"):
        raise click.UsageError("give at least one INPUT (video file, frame folder, dataset folder, glob or manifest)")
    if not data.get("output"):
        raise click.UsageError("--output is required (a local path or s3://bucket/prefix)")
    if isinstance(data.get("resources"), dict):  # partial per-stage settings fill in the defaults
        defaults = {k: v.model_dump() for k, v in default_resources().items()}
        data["resources"] = deep_merge(defaults, data["resources"])
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise click.UsageError(f"invalid job config: {describe_validation_error(exc)}") from None


def _read_yaml(path: str) -> dict:
    """``--config FILE`` as a mapping (YAML via safe_load only); errors name the line, never the text."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise click.UsageError(f"--config {path}: not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise click.UsageError(f"--config {path}: not valid YAML ({type(exc).__name__})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"--config {path}: cannot read it ({type(exc).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise click.UsageError(f"--config {path}: expected a mapping (inputs:, output:, model:, ...), "
                               f"got a {type(data).__name__}")
    return data
