"""Typed job configuration (pydantic), with YAML in and out.

:func:`load_config` is the one way a config is built (a YAML/JSON file, JSON string or
mapping, then overrides, then the model's own defaults): ``run`` and ``submit`` call it with
their flags as overrides, the job entry point (``python -m fastsam2.job``) with its
``--inputs`` / ``--output``. The same object, serialised to JSON, travels to a cluster job,
so ``run`` and ``submit`` execute one code path. Per-stage resources are filled and checked
from the stages' own declarations (:mod:`fastsam2.stage_specs`).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from fastsam2.stage_specs import STAGE_SPECS, TRACK, StageResources, default_stage_resources  # StageResources is still importable from here


class ObjectPrompt(BaseModel):
    """The prompt of one object: a click, a box, or both, on the frame it starts on.

    Auto prompts also carry where they came from (one ``objects/`` row each):
    the proposal's objectness, the caption and its phrase (the object's own
    router text), and the CLIP region-text score when a phrase selected it.
    """

    obj_id: int = 1
    point: list[float] | None = None  # x, y in pixels
    box: list[float] | None = None  # x0, y0, x1, y1 in pixels
    frame_idx: int = 0
    objectness: float | None = None
    caption: str | None = None
    text: str | None = None  # this object's phrase (router text relevance)
    clip_score: float | None = None
    source: Literal["user", "auto", "text"] | None = None


class VideoTask(BaseModel):
    """One video to label: where it is and what (if anything) the user said about it."""

    video_id: str
    uri: str
    kind: Literal["file", "frames"] = "file"
    # The user's own id (a manifest's video_id column) as given, when the safe id differs from it.
    source_id: str | None = None
    objects: list[ObjectPrompt] = Field(default_factory=list)
    text: str | None = None
    prompt_source: Literal["user", "auto", "text"] | None = None
    # Filled by the auto-prompt stages.
    caption: str | None = None
    objectness: float | None = None
    caption_backend: str | None = None
    caption_model: str | None = None
    # Set when an earlier stage failed on this video: an errors/ row, passed through.
    error: dict | None = None


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    sam2_config: str = "sam2.1_hiera_t"
    sam2_checkpoint: str | None = None
    random_weights: bool = False
    image_size: int = 1024
    device: str = "auto"
    # Tracking precision: auto = bf16 autocast + TF32 on CUDA, fp32 on CPU (fastsam2.tracking.runtime).
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Exact, synchronised per-component timings (stalls the GPU; for diagnosis). Off: CUDA events.
    profile: bool = False
    # torch.compile the image encoder and memory attention (static shapes). Off by default.
    compile: bool = False

    @field_validator("image_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v < 64 or v % 16:
            raise ValueError("image_size must be a multiple of 16 and at least 64")
        return v


class PruningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keep_ratio: float = 0.3
    router_weights: str | None = None
    # Text relevance: dense CLIP patch-text similarity ("clip"), the paper's
    # least-squares projection ("paper", which ignores the text's direction), or none.
    semantic: Literal["clip", "paper", "none"] = "clip"
    # Encoder-block uncertainty: closed-form dropout variance (fast default) or sampled MC.
    uncertainty: Literal["closed_form", "mc", "none"] = "closed_form"
    mc_passes: int = 5  # sampled MC dropout passes (the paper's T) when uncertainty='mc'
    clip_model: str = "ViT-B-16"
    clip_pretrained: str | None = "openai"
    # Sparse image encoder (fastsam2.tracking.sparse_encoder): reuse cached encoder
    # activations where a frame did not change (temporal) / away from the objects (object).
    # Approximates the encoder; "off" is the stock encoder.
    encoder_sparsity: Literal["off", "temporal", "object", "both"] = "off"
    encoder_refresh: int = 8  # full encoder pass every N frames (1 = always: exact)
    encoder_threshold: float = 0.1  # relative token change that triggers recompute (0 = all: exact)

    @field_validator("keep_ratio")
    @classmethod
    def _in_unit_interval(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError("keep_ratio must be in (0, 1]")
        return v

    @field_validator("encoder_refresh")
    @classmethod
    def _refresh_positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("encoder_refresh must be at least 1 (1 = a full encoder pass every frame)")
        return v

    @field_validator("encoder_threshold")
    @classmethod
    def _threshold_non_negative(cls, v: float) -> float:
        if not v >= 0.0:
            raise ValueError("encoder_threshold must be >= 0 (0 = recompute every token)")
        return v


class PromptConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["auto", "user"] = "auto"
    point: list[float] | None = None
    box: list[float] | None = None
    text: str | None = None
    detector_weights: str | None = None
    max_search_frames: int = 5
    min_objectness: float = 0.5
    caption_backend: Literal["vllm", "openai", "transformers", "none"] = "transformers"
    caption_model: str = "llava-hf/llava-1.5-7b-hf"
    caption_endpoint: str | None = None
    # How the vllm backend runs inside the pipeline: "ray-data-llm" serves it as its own stage
    # (ray.data.llm: vLLM engine actors with their own GPUs and batching, fed the region JPEGs
    # the propose stage made); "actor" holds one vllm.LLM in each caption actor (single
    # machine); "auto" is ray-data-llm.
    caption_serving: Literal["auto", "ray-data-llm", "actor"] = "auto"
    # vLLM engine settings (e.g. gpu_memory_utilization, dtype, max_model_len,
    # tensor_parallel_size); merged over caption_vllm.DEFAULT_ENGINE_KWARGS.
    caption_engine: dict = Field(default_factory=dict)
    # Ray accelerator type for the vLLM engine actors (e.g. "A10G", "L4"); None: any GPU.
    caption_accelerator_type: str | None = None
    # Several objects per video (see fastsam2.prompts.multi). A cap on a video's objects in total:
    # objects that enter later (detect_every) only fill the free slots, best first; user prompts are never dropped.
    max_objects: int = 5
    nms_iou: float = 0.5  # class-agnostic box NMS between proposals
    dedup_mask_iou: float = 0.7  # proposals whose coarse SAM2 masks overlap this much count once
    # Re-run proposals every N tracked frames; a proposal overlapping no tracked mask
    # (IoU below new_object_iou) starts a new object there. None: off.
    detect_every: int | None = None
    new_object_iou: float = 0.1
    # Track objects found after the first frame back to it (a second, reverse pass).
    bidirectional: bool = False
    # Text-grounded selection (--prompts auto --text): lowest CLIP region-text similarity kept.
    text_threshold: float = 0.2

    @field_validator("max_objects")
    @classmethod
    def _positive_objects(cls, v: int) -> int:
        if v < 1:
            raise ValueError("max_objects must be at least 1")
        return v

    @field_validator("detect_every")
    @classmethod
    def _positive_interval(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("detect_every must be at least 1 (leave it out to detect on the first frame only)")
        return v


class JobConfig(BaseModel):
    """Everything one run needs; YAML keys mirror the fields."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str]
    output: str
    storage_options: dict = Field(default_factory=dict)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    prompts: PromptConfig = Field(default_factory=PromptConfig)
    # Every stage's entry, filled from its declaration (fastsam2.stage_specs) where not given.
    resources: dict[str, StageResources] = Field(default_factory=default_stage_resources)
    max_frames: int | None = None
    # Videos each tracking actor advances in lockstep (on a GPU one batched image-encoder call and
    # one batched memory-attention call per step; fastsam2.tracking.lockstep). The track stage's batch size is raised to it.
    videos_per_actor: int = Field(1, ge=1)
    # Add to an output root whose recorded settings differ (see fastsam2.run_settings).
    allow_mixed_settings: bool = False
    # Ray Data aborts a run when no stage makes progress for this long (its own default is 30
    # minutes, which a few long videos or a wait for spot GPUs can reach); None: never.
    no_progress_timeout_s: float | None = 6 * 3600.0
    # How often the driver logs per-stage progress and throughput (seconds; 0: never).
    progress_log_interval_s: float = 60.0
    # A GPU stage that no node can host, while the autoscaler adds none, fails the run after
    # this long (seconds; 0: wait forever). See fastsam2/placement.py.
    placement_timeout_s: float = 60.0
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])

    @field_validator("max_frames")
    @classmethod
    def _at_least_one_frame(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("max_frames must be at least 1 (leave it out for every frame)")
        return v

    @field_validator("output")
    @classmethod
    def _plain_local_path(cls, v: str) -> str:
        return v[len("file://"):] if v.startswith("file://") else v

    @field_validator("resources", mode="before")
    @classmethod
    def _fill_stage_defaults(cls, v: Any) -> Any:
        """Known stages only; a stage left out, or given in part, gets its declared defaults."""
        if v is None:
            return default_stage_resources()
        if not isinstance(v, dict):
            return v  # pydantic names the type error
        unknown = sorted(str(k) for k in set(v) - set(STAGE_SPECS))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {sorted(STAGE_SPECS)}")
        out: dict[str, Any] = {}
        for name, spec in STAGE_SPECS.items():
            given = v.get(name)
            if isinstance(given, dict):
                out[name] = {**spec.defaults.model_dump(), **given}
            else:
                out[name] = spec.defaults.model_copy(deep=True) if given is None else given
        return out

    @field_validator("resources")
    @classmethod
    def _stage_rules(cls, v: dict[str, StageResources], info: ValidationInfo) -> dict[str, StageResources]:
        """Each stage's own rules (e.g. vLLM takes whole GPUs), checked for ``run`` and ``submit`` alike.

        Not with random weights: every caption backend then runs the tiny in-process LLaVA."""
        prompts, model = info.data.get("prompts"), info.data.get("model")
        if prompts is not None and not (model is not None and model.random_weights):
            for name, res in v.items():
                STAGE_SPECS[name].check(res, prompts)
        return v

    @model_validator(mode="after")
    def _track_batch_holds_videos_per_actor(self) -> "JobConfig":
        """An actor can only keep as many videos in flight as its batch brings."""
        track = self.resource(TRACK.name)
        if track.batch_size < self.videos_per_actor:
            self.resources = {**self.resources, TRACK.name: track.model_copy(update={"batch_size": self.videos_per_actor})}
        return self

    def resource(self, stage: str) -> StageResources:
        return self.resources.get(stage) or STAGE_SPECS[stage].defaults

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class ConfigError(ValueError):
    """A job config that cannot be read or is invalid: one line naming the cause, never the values.

    ``validation`` holds pydantic's error when the config was read but is invalid, so a caller
    can name its own flags (the CLI does).
    """

    def __init__(self, message: str, validation: ValidationError | None = None):
        super().__init__(message)
        self.validation = validation


#: Where the job entry point (``python -m fastsam2.job``) reads a config when given none.
CONFIG_ENV = "FASTSAM2_JOB_CONFIG"


def read_config_file(path: str | Path, what: str | None = None) -> dict:
    """A YAML/JSON config file as a mapping (YAML via safe_load); errors name the line, never the text."""
    what = what or str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())  # JSON is YAML too
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{what}: not valid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: not valid YAML ({type(exc).__name__})") from None
    except FileNotFoundError:
        raise ConfigError(f"{what}: job config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read it ({type(exc).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: expected a mapping (inputs:, output:, model:, ...), got a {type(data).__name__}")
    return data


def load_config(source: str | Path | dict | None = None, overrides: dict | None = None, *,
                what: str | None = None) -> JobConfig:
    """The one way a :class:`JobConfig` is built: a source, then overrides, then the model's defaults.

    ``source``: a YAML/JSON file path, a JSON string (``{...}``), a mapping, or None (nothing:
    the overrides alone). ``overrides`` are merged over it (:func:`deep_merge`: None values are
    ignored, mappings merge, everything else replaces). Missing fields, and per-stage resources
    given in part, get their defaults from the model itself. ``what`` names the source in errors
    (e.g. ``--config job.yaml``). Raises :class:`ConfigError`.
    """
    if isinstance(source, dict):
        data = dict(source)
    elif source is None:
        data = {}
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        try:
            data = json.loads(source)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{what or 'job config'}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{what or 'job config'}: expected a mapping (inputs:, output:, model:, ...)")
    else:
        data = read_config_file(source, what)
    data = deep_merge(data, overrides or {})
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid job config: {describe_validation_error(exc)}", exc) from None


def config_source(arg: str | None) -> str:
    """The job entry point's config: its argument, else ``$FASTSAM2_JOB_CONFIG``."""
    text = arg if arg is not None else os.environ.get(CONFIG_ENV)
    if not text:
        raise ConfigError(f"no job config: give a file path or JSON as the argument, or set {CONFIG_ENV}")
    return text


def describe_validation_error(exc: ValidationError) -> str:
    """``field: message; ...`` for a pydantic error, never the values given (they may be secrets)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())


def deep_merge(base: dict, over: dict) -> dict:
    """Merge ``over`` into ``base`` recursively (``over`` wins; None values are ignored)."""
    out = dict(base)
    for key, value in over.items():
        if value is None:
            continue
        if isinstance(value, dict):
            merged = deep_merge(out[key] if isinstance(out.get(key), dict) else {}, value)
            if merged or isinstance(out.get(key), dict):
                out[key] = merged
        else:
            out[key] = value
    return out
