"""What each pipeline stage declares: its name, default resources, when a job needs it, where it goes.

The one home of these decisions (as cosmos-curate's stage interface: a stage states its
resources beside its work). Each Ray class in :mod:`fastsam2.stages` names its spec
(``TrackStage.spec is TRACK``); :mod:`fastsam2.config` fills and validates per-stage
resources from :data:`STAGES`; :mod:`fastsam2.pipeline` picks the stages a job needs and
:mod:`fastsam2.placement` their GPUs from the same specs. The specs sit here, below the
config, because the config reads them and ``stages.py`` builds on the config.

The rules take the job config (and its video tasks) duck-typed, so this module imports
nothing of the package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StageResources(BaseModel):
    """Resources of one Ray stage: per-actor GPUs (fractional allowed), pool size, batch size."""

    model_config = ConfigDict(extra="forbid")
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    min_actors: int = 1
    max_actors: int = 1
    batch_size: int = 1
    # Custom Ray resources per actor, e.g. {"tracker": 1} to keep a stage on the nodes
    # started with `ray start --resources '{"tracker": 8}'`.
    resources: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "StageResources":
        if self.num_gpus < 0 or self.num_cpus < 0:
            raise ValueError("num_gpus and num_cpus cannot be negative")
        if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
            raise ValueError(f"more than one GPU per actor must be a whole number, got {self.num_gpus}")
        if not 1 <= self.min_actors <= self.max_actors:
            raise ValueError(f"need 1 <= min_actors <= max_actors, got {self.min_actors} and {self.max_actors}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        return self


def _always(cfg: Any, tasks: Sequence[Any]) -> bool:
    return True


def _never(prompts: Any) -> bool:
    return False


def _gpu_always(cfg: Any) -> bool:
    return True


def _auto_tasks(tasks: Sequence[Any]) -> list[Any]:
    return [t for t in tasks if t.prompt_source == "auto"]


def _needs_propose(cfg: Any, tasks: Sequence[Any]) -> bool:
    """Some video has no user prompt: boxes and clicks must be proposed."""
    return bool(_auto_tasks(tasks))


def captions(cfg: Any, task: Any) -> bool:
    """Whether the caption stage captions this video: the job captions, and its prompt is
    automatic with no phrase yet (neither the user's nor a caption's) and has not failed.

    The one rule for planning a job (:func:`_needs_caption`) and for the propose and
    caption stages (which crops to ship, which videos to caption).
    """
    return (cfg.prompts.caption_backend != "none" and not task.error
            and task.prompt_source == "auto" and not task.text)


def _needs_caption(cfg: Any, tasks: Sequence[Any]) -> bool:
    """Some video of the job will be captioned."""
    return any(captions(cfg, t) for t in tasks)


def _caption_uses_gpu(cfg: Any) -> bool:
    """A remote endpoint (openai) or no captioner at all needs no GPU in the caption actors."""
    return cfg.prompts.caption_backend not in ("openai", "none")


def _caption_whole_gpus(prompts: Any) -> bool:
    """vLLM engines take whole GPUs (in an actor or served)."""
    return prompts.caption_backend == "vllm"


@dataclass(frozen=True)
class StageSpec:
    """One stage's declaration.

    ``defaults``: its resources when the config names none (a CPU run's).
    ``gpus``: per-actor GPUs on a GPU cluster where the config leaves ``num_gpus`` at 0
    (see :mod:`fastsam2.placement`), when ``uses_gpu(cfg)``.
    ``needed(cfg, tasks)``: whether a job over these video tasks runs this stage.
    ``whole_gpus(prompts)``: when the stage's ``num_gpus`` must be a whole number.
    """

    name: str
    defaults: StageResources
    gpus: float = 0.0
    needed: Callable[[Any, Sequence[Any]], bool] = _always
    uses_gpu: Callable[[Any], bool] = _gpu_always
    whole_gpus: Callable[[Any], bool] = _never
    whole_gpus_reason: str = ""

    def default_gpus(self, cfg: Any) -> float:
        """Per-actor GPUs on a GPU cluster when the config gives none."""
        return self.gpus if self.uses_gpu(cfg) else 0.0

    def check(self, res: StageResources, prompts: Any) -> None:
        """Raise ``ValueError`` when ``res`` breaks a rule of this stage."""
        if res.num_gpus and res.num_gpus != int(res.num_gpus) and self.whole_gpus(prompts):
            raise ValueError(f"{self.name}.num_gpus={res.num_gpus:g}: {self.whole_gpus_reason}")


PROPOSE = StageSpec("propose", StageResources(num_cpus=1), gpus=0.25, needed=_needs_propose)
CAPTION = StageSpec("caption", StageResources(num_cpus=1), gpus=1.0, needed=_needs_caption,
                    uses_gpu=_caption_uses_gpu, whole_gpus=_caption_whole_gpus,
                    whole_gpus_reason="vLLM engines take whole GPUs (--caption-backend vllm)")
TRACK = StageSpec("track", StageResources(num_cpus=1), gpus=1.0)
WRITE = StageSpec("write", StageResources(num_cpus=0.25), gpus=0.0)

#: Every stage, in pipeline order.
STAGES: tuple[StageSpec, ...] = (PROPOSE, CAPTION, TRACK, WRITE)
#: The same, by name.
STAGE_SPECS: dict[str, StageSpec] = {s.name: s for s in STAGES}


def default_stage_resources() -> dict[str, StageResources]:
    """Every stage's default resources (fresh copies)."""
    return {s.name: s.defaults.model_copy(deep=True) for s in STAGES}


def needed_stages(cfg: Any, tasks: Sequence[Any]) -> list[str]:
    """The names of the stages a job over ``tasks`` runs, in pipeline order."""
    return [s.name for s in STAGES if s.needed(cfg, tasks)]
