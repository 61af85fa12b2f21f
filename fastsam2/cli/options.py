"""Job options shared by ``run`` and ``submit``, and the JobConfig they build.

The flags become overrides of ``--config FILE`` for the one config loader
(:func:`fastsam2.config.load_config`); :data:`FLAG_FIELDS` says which field each flag sets,
so errors name the flag and ``--help`` shows the field's default. Kept apart from the
command modules so ``run`` and ``submit`` share them without importing each other.
"""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError

from fastsam2.cli.storage_options import JsonObject, storage_options_option
from fastsam2.config import ConfigError, JobConfig, StageResources, load_config
from fastsam2.stage_specs import STAGE_SPECS, STAGES


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


def _checkpoint_help() -> str:
    from fastsam2.models.weights import cache_dir, hub_cache_dir

    return (f"Checkpoint path or URI. Default: the official one, from the Hugging Face cache (HF_HUB_CACHE, here "
            f"{hub_cache_dir()}), else downloaded once (checksum checked) into FASTSAM2_CACHE (here {cache_dir()}).")


def job_options(fn):
    """Options shared by ``run`` and ``submit``: they describe the same job."""
    options = [
        click.option("--output", "-o", help="Output root (required, here or in --config): local path or s3://bucket/prefix."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                     help="YAML job config (flags override it).", show_default="none"),
        click.option("--sam2-config", help="SAM2 model config: sam2.1_hiera_t, _s, _b+, _l (or sam2_hiera_*)."),
        click.option("--sam2-checkpoint", help=_checkpoint_help()),
        click.option("--random-weights", is_flag=True, default=None, help="No checkpoints at all (smoke tests, demos): every model gets random weights."),
        click.option("--image-size", type=int, help="SAM2 input size (multiple of 16)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where models run (auto: CUDA when present)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     help="Tracking precision (auto: bf16 autocast with TF32 on CUDA, fp32 on CPU)."),
        click.option("--profile", is_flag=True, default=None,
                     help="Exact per-component timings: synchronise the GPU around every component (slower; "
                          "normally CUDA events are read once per frame)."),
        click.option("--compile", "compile_model", is_flag=True, default=None,
                     help="torch.compile the image encoder and memory attention (static shapes; first frames "
                          "are slow while it compiles)."),
        click.option("--point", help="First-frame click X,Y for every video (manifest columns override per video)."),
        click.option("--box", help="First-frame box X0,Y0,X1,Y1 for every video."),
        click.option("--text", help="Object phrase for every video (skips captioning)."),
        click.option("--prompts", type=click.Choice(["auto", "user"]), help="auto: propose a prompt where none is given; user: only given prompts."),
        click.option("--keep-ratio", type=float, help="Fraction of tokens memory attention keeps (1.0 = dense, stock SAM2)."),
        click.option("--semantic", type=click.Choice(["clip", "paper", "none"]), help="Router text relevance."),
        click.option("--uncertainty", type=click.Choice(["closed_form", "mc", "none"]), help="Router uncertainty."),
        click.option("--mc-passes", type=int, help="Sampled MC dropout passes with --uncertainty mc."),
        click.option("--router-weights", help="Trained router MLP weights (from train-router)."),
        click.option("--encoder-sparsity", type=click.Choice(["off", "temporal", "object", "both"]),
                     help="Sparse image encoder for video: reuse cached activations where the frame did not "
                          "change (temporal) / away from the objects (object). Approximate; off = stock encoder."),
        click.option("--encoder-refresh", type=int, help="Full encoder pass every N frames with --encoder-sparsity (1 = exact)."),
        click.option("--encoder-threshold", type=float,
                     help="Relative token change that triggers recompute with --encoder-sparsity (0 = exact)."),
        click.option("--caption-backend", type=click.Choice(["vllm", "openai", "transformers", "none"]),
                     help="Who captions auto prompts (none: no text, the router runs without it)."),
        click.option("--caption-model", help="Captioning model."),
        click.option("--caption-endpoint", help="OpenAI-compatible endpoint URL for --caption-backend openai."),
        click.option("--max-frames", type=click.IntRange(min=1), help="Track at most this many frames per video (none: all)."),
        storage_options_option,
        click.option("--track-gpus", type=float, help="GPUs per SAM2 actor (fractional allowed)."),
        click.option("--track-actors", type=int, help="Maximum number of SAM2 actors."),
        click.option("--videos-per-actor", type=int, help="Videos each SAM2 actor tracks in lockstep: on a GPU one batched image-encoder call and one batched memory-attention call per step (e.g. 4 on a GPU; raises the track batch size to match)."),
        click.option("--resource", "resource_overrides", multiple=True, metavar="STAGE.FIELD=VALUE",
                     help="Per-stage resources, repeatable: e.g. propose.num_gpus=0.25, track.max_actors=8, "
                          f"caption.batch_size=16 (stages: {', '.join(s.name for s in STAGES)})."),
        click.option("--detector-weights", help="RPN weights: a file, or 'default' for torchvision's cache."),
        click.option("--min-objectness", type=float, help="Lowest RPN objectness accepted for an auto box."),
        click.option("--max-objects", type=click.IntRange(min=1), help="Track at most K objects per video in total (auto prompts, and objects that enter later with --detect-every: they fill the free slots, best first; user prompts are never dropped)."),
        click.option("--detect-every", type=click.IntRange(min=1), help="Look for objects that enter later every N frames (none: off)."),
        click.option("--bidirectional", is_flag=True, default=None, help="Also track objects found after the first frame back to it (a second, reverse pass)."),
        click.option("--allow-mixed-settings", is_flag=True, default=None,
                     help="Add to an --output whose earlier runs used other settings (normally refused)."),
    ]
    for opt in reversed(options):
        fn = opt(fn)
    for param in getattr(fn, "__click_params__", []):
        # Flags default to None so --config FILE values survive; show the config's default instead.
        if param.name in FLAG_FIELDS and not param.is_flag:
            param.show_default = _config_default(FLAG_FIELDS[param.name])
    return fn


#: Which JobConfig field each job option sets (its error messages and shown default come from there).
#: One entry per flag.
FLAG_FIELDS: dict[str, tuple[str, ...]] = {
    "output": ("output",),
    "max_frames": ("max_frames",),
    "storage_options": ("storage_options",),
    "allow_mixed_settings": ("allow_mixed_settings",),
    "sam2_config": ("model", "sam2_config"),
    "sam2_checkpoint": ("model", "sam2_checkpoint"),
    "random_weights": ("model", "random_weights"),
    "image_size": ("model", "image_size"),
    "device": ("model", "device"),
    "precision": ("model", "precision"),
    "profile": ("model", "profile"),
    "compile_model": ("model", "compile"),
    "keep_ratio": ("pruning", "keep_ratio"),
    "router_weights": ("pruning", "router_weights"),
    "semantic": ("pruning", "semantic"),
    "uncertainty": ("pruning", "uncertainty"),
    "mc_passes": ("pruning", "mc_passes"),
    "encoder_sparsity": ("pruning", "encoder_sparsity"),
    "encoder_refresh": ("pruning", "encoder_refresh"),
    "encoder_threshold": ("pruning", "encoder_threshold"),
    "prompts": ("prompts", "mode"),
    "point": ("prompts", "point"),
    "box": ("prompts", "box"),
    "text": ("prompts", "text"),
    "caption_backend": ("prompts", "caption_backend"),
    "caption_model": ("prompts", "caption_model"),
    "caption_endpoint": ("prompts", "caption_endpoint"),
    "detector_weights": ("prompts", "detector_weights"),
    "min_objectness": ("prompts", "min_objectness"),
    "max_objects": ("prompts", "max_objects"),
    "detect_every": ("prompts", "detect_every"),
    "bidirectional": ("prompts", "bidirectional"),
    "track_gpus": ("resources", "track", "num_gpus"),
    "track_actors": ("resources", "track", "max_actors"),
    "videos_per_actor": ("videos_per_actor",),
}

def _config_default(path: tuple[str, ...]) -> str:
    """The default of a JobConfig field, as --help shows it ("none" where there is none)."""
    from pydantic_core import PydanticUndefined

    value: Any = None
    if path[0] == "resources":
        value = getattr(STAGE_SPECS[path[1]].defaults, path[2])
    elif len(path) == 1:
        field = JobConfig.model_fields[path[0]]
        value = None if field.default is PydanticUndefined else field.default
        if field.default_factory is not None:
            value = field.default_factory()
    else:
        value = getattr(JobConfig.model_fields[path[0]].default_factory(), path[1])
    if value in (None, {}, []):
        return "none"
    return ",".join(f"{v:g}" for v in value) if isinstance(value, list) else str(value)


def _flag_for(loc: tuple) -> str | None:
    """``("pruning", "keep_ratio")`` -> ``"--keep-ratio"``."""
    path = tuple(str(p) for p in loc)
    for name, field_path in FLAG_FIELDS.items():
        if path[: len(field_path)] == field_path:
            return "--" + name.replace("_", "-")
    if path[:1] == ("resources",) and len(path) >= 3:
        return f"--resource {path[1]}.{path[2]}"
    return {"inputs": "INPUT"}.get(path[0]) if path else None


def describe_errors(exc: ValidationError, from_file: bool) -> str:
    """Validation errors by the flag that sets the field (and the field too when a --config file was read)."""
    out = []
    for e in exc.errors():
        field = ".".join(map(str, e["loc"])) or "(top level)"
        flag = _flag_for(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if flag and from_file:
            out.append(f"{flag} ({field} in --config): {msg}")
        else:
            out.append(f"{flag or field}: {msg}")
    return "; ".join(out)


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


def _set(data: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def flag_overrides(inputs: tuple[str, ...], **kw: Any) -> dict:
    """The job options as overrides of a JobConfig (None: not given, ``--config``'s value stays)."""
    point = _floats(kw.get("point"), 2, "--point")
    box = _floats(kw.get("box"), 4, "--box")
    prompts_mode = kw.get("prompts")
    if prompts_mode is None and (point or box):
        prompts_mode = "user"
    over: dict = {"inputs": list(inputs) or None, "resources": _resource_overrides(kw.get("resource_overrides") or ())}
    # A dict from click (the option parses it) or from Python callers; the flag's JSON text from others.
    storage_options = JsonObject().convert(kw.get("storage_options"), None, None)
    parsed = {"point": point, "box": box, "prompts": prompts_mode, "storage_options": storage_options}
    for flag, path in FLAG_FIELDS.items():
        value = parsed[flag] if flag in parsed else kw.get(flag)
        if value is not None:
            _set(over, path, value)
    return over


def build_config(inputs: tuple[str, ...], **kw: Any) -> JobConfig:
    """``--config FILE`` with the flags over it, through the one loader, as a validated :class:`JobConfig`."""
    config_file = kw.get("config_file")
    try:
        cfg = load_config(config_file, flag_overrides(inputs, **kw), what=config_file and f"--config {config_file}")
    except ConfigError as exc:
        if exc.validation is None:
            raise click.UsageError(str(exc)) from None
        missing = {e["loc"][:1] for e in exc.validation.errors() if e["type"] == "missing"}
        if ("inputs",) in missing:
            raise click.UsageError(NO_INPUT) from None
        if ("output",) in missing:
            raise click.UsageError(NO_OUTPUT) from None
        raise click.UsageError(f"invalid job config: {describe_errors(exc.validation, from_file=bool(config_file))}") from None
    if not cfg.inputs:
        raise click.UsageError(NO_INPUT)
    if not cfg.output:
        raise click.UsageError(NO_OUTPUT)
    return cfg


NO_INPUT = "give at least one INPUT (video file, frame folder, dataset folder, glob or manifest)"
NO_OUTPUT = "--output is required (a local path or s3://bucket/prefix)"
