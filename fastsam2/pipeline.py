"""Build the Ray Dataset for a job config and run it: one code path for local and cluster runs.

    sources -> [auto prompts] -> track (SAM2 actors) -> write (per-video Parquet)

The driver only lists inputs, skips videos already done, and counts what comes
back; all model work happens in the stages.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from fastsam2.config import JobConfig, ObjectPrompt, VideoTask
from fastsam2.placement import (  # GPU_DEFAULTS, gpu_plan, PlacementError: re-exported, their old home
    GPU_DEFAULTS,  # noqa: F401
    ClusterGPUs,
    PlacementError,
    check_placeable,
    gpu_plan,
    read_cluster,
)
from fastsam2.sources import discover
from fastsam2.storage import done_video_ids

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    output: str
    run_id: str
    total: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    masks: int = 0
    errors: list[str] = field(default_factory=list)
    random_weights: bool = False


def plan_tasks(cfg: JobConfig) -> tuple[list[VideoTask], list[VideoTask]]:
    """(all tasks, tasks still to do) with the job-wide prompt options applied."""
    tasks = discover(cfg.inputs, cfg.storage_options)
    p = cfg.prompts
    for t in tasks:
        if not t.objects and (p.point or p.box):
            t.objects = [ObjectPrompt(obj_id=1, point=p.point, box=p.box)]
        if p.text and not t.text:
            t.text = p.text
        # A user click or box skips the automatic steps; so does --prompts user
        # (a video without a prompt then fails with a clear "no prompt" error).
        t.prompt_source = "user" if t.objects or p.mode == "user" else "auto"
    done = done_video_ids(cfg.output, cfg.storage_options)
    return tasks, [t for t in tasks if t.video_id not in done]


def init_ray(address: str | None = None) -> None:
    """Join the cluster we run in (RAY_ADDRESS, set by `ray job submit`) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True)


def _actor_stage(ds, stage_cls, cfg: JobConfig, stage: str, config_json: str, num_gpus: float):
    """``map_batches`` with a pool of stateful actors sized and resourced per the config."""
    from ray.data import ActorPoolStrategy

    res = cfg.resource(stage)
    return ds.map_batches(
        stage_cls,
        fn_constructor_kwargs={"config_json": config_json},
        # One batch in flight per actor: a second one would queue behind a long video on a
        # busy actor while another actor sits idle.
        compute=ActorPoolStrategy(min_size=res.min_actors, max_size=res.max_actors,
                                  max_tasks_in_flight_per_actor=1),
        batch_size=res.batch_size,
        num_gpus=num_gpus,
        num_cpus=res.num_cpus,
        **({"resources": dict(res.resources)} if res.resources else {}),
        # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1:
        # a killed actor comes back and its batch is processed again from the start.
    )


def caption_served(cfg: JobConfig) -> bool:
    """Whether captions run as a ray.data.llm stage (vLLM engines with their own GPUs)."""
    p = cfg.prompts
    return p.caption_backend == "vllm" and not cfg.model.random_weights and p.caption_serving != "actor"


@dataclass
class StagePlan:
    """The stages of a run, in order, and the GPUs of each actor stage.

    ``served_caption``: the caption stage is the ray.data.llm processor, whose vLLM
    engines request their own GPUs (it has no entry in ``gpus``).
    """

    names: list[str]
    gpus: dict[str, float]
    served_caption: bool = False


def plan_stages(cfg: JobConfig, tasks: list[VideoTask], cluster: ClusterGPUs | None = None) -> StagePlan:
    """The stages this run needs and their GPUs on ``cluster`` (default: the connected one).

    Raises :class:`~fastsam2.placement.PlacementError` when a stage can never be placed there.
    """
    names = ["track", "write"]
    auto = [t for t in tasks if t.prompt_source == "auto"]
    if auto:
        captions = cfg.prompts.caption_backend != "none" and any(not t.text for t in auto)
        names = ["propose"] + (["caption"] if captions else []) + names
    served = "caption" in names and caption_served(cfg)
    cluster = cluster or read_cluster()
    gpus = gpu_plan(cfg, [n for n in names if not (served and n == "caption")], cluster)
    check_placeable(cfg, gpus, cluster)
    return StagePlan(names, gpus, served)


def build_dataset(cfg: JobConfig, tasks: list[VideoTask], plan: StagePlan | None = None):
    """The lazy Ray Dataset: one row per video in, one summary row per video out."""
    import ray

    from fastsam2.stages import CaptionStage, ProposeStage, TrackStage, WriteStage

    classes = {"propose": ProposeStage, "caption": CaptionStage, "track": TrackStage, "write": WriteStage}
    plan = plan or plan_stages(cfg, tasks)
    config_json = cfg.model_dump_json()
    rows = [{"video_id": t.video_id, "task": t.model_dump_json()} for t in tasks]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    for name in plan.names:
        if plan.served_caption and name == "caption":
            from fastsam2.prompts.caption_vllm import served_caption_stage

            ds = served_caption_stage(ds, cfg)  # vLLM engines request their own GPUs
        else:
            ds = _actor_stage(ds, classes[name], cfg, name, config_json, plan.gpus[name])
    return ds


def run_pipeline(cfg: JobConfig, progress: bool = True, address: str | None = None) -> RunSummary:
    """Label every video of ``cfg.inputs`` not yet done under ``cfg.output``."""
    tasks, todo = plan_tasks(cfg)
    summary = RunSummary(output=cfg.output, run_id=cfg.run_id, total=len(tasks), skipped=len(tasks) - len(todo),
                         random_weights=cfg.model.random_weights)
    if not todo:
        return summary
    init_ray(address)
    from ray.data import DataContext

    from fastsam2.placement import PlacementWatchdog
    from fastsam2.progress import ProgressLogger

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # ours below is per video
    ctx.execution_no_progress_timeout_s = cfg.no_progress_timeout_s or -1  # -1: never
    plan = plan_stages(cfg, todo)
    ds = build_dataset(cfg, todo, plan)
    watchdog = PlacementWatchdog(cfg, plan.gpus, cfg.placement_timeout_s).start()
    try:
        with ProgressLogger(cfg.run_id, len(todo), cfg.progress_log_interval_s), \
                _progress(progress, len(todo)) as advance:
            for row in ds.iter_rows():
                watchdog.stop()  # something came out: the stages are placed
                if row["status"] == "ok":
                    summary.ok += 1
                    summary.masks += int(row["num_masks"])
                else:
                    summary.failed += 1
                    summary.errors.append(f"{row['video_id']}: {row['message']}")
                advance(str(row["video_id"]), str(row["status"]))
    except KeyboardInterrupt:
        if watchdog.reason:
            raise PlacementError(f"the job cannot be placed on this cluster: {watchdog.reason}") from None
        raise
    finally:
        watchdog.stop()
    return summary


class _progress:
    """Per-video progress: a rich bar on a terminal, one plain line per video otherwise
    (job logs, CI), nothing when disabled."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.done = enabled, total, 0
        self.bar = enabled and sys.stderr.isatty()

    def _line(self, vid: str, status: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {vid}: {status}", file=sys.stderr, flush=True)

    def __enter__(self):
        if not self.enabled:
            return lambda *_: None
        if not self.bar:
            return self._line
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("[bold]labelling videos"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("{task.description}"))
        self._p.__enter__()
        self._task = self._p.add_task("", total=self.total)
        return lambda vid, status: self._p.update(self._task, advance=1, description=f"{vid}: {status}")

    def __exit__(self, *exc):
        if self.bar:
            self._p.__exit__(*exc)
        return False
