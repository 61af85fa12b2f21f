"""Build the Ray Dataset for a job config and run it: one code path for local and cluster runs.

    sources -> [auto prompts] -> track (SAM2 actors) -> write (per-video Parquet)

The driver only lists inputs, skips videos already done, and counts what comes
back; all model work happens in the stages.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from fastsam2.config import JobConfig, ObjectPrompt, VideoTask
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
        t.prompt_source = "user" if t.objects else "auto"
    done = done_video_ids(cfg.output, cfg.storage_options)
    return tasks, [t for t in tasks if t.video_id not in done]


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster we run in (RAY_ADDRESS, set by `ray job submit`) or start a local one."""
    import ray

    if ray.is_initialized():
        return
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)


def _gpus_for(cfg: JobConfig, stage: str) -> float:
    """Per-actor GPUs: as configured, else one whole GPU where the cluster has any and the device allows."""
    import ray

    res = cfg.resource(stage)
    if res.num_gpus or cfg.model.device == "cpu":
        return res.num_gpus
    if stage == "track" and ray.cluster_resources().get("GPU", 0) >= 1:
        return 1.0
    return 0.0


def build_dataset(cfg: JobConfig, tasks: list[VideoTask]):
    """The lazy Ray Dataset: one row per video in, one summary row per video out."""
    import ray
    from ray.data import ActorPoolStrategy

    from fastsam2.stages import TrackStage, WriteStage

    config_json = cfg.model_dump_json()
    rows = [{"video_id": t.video_id, "task": t.model_dump_json()} for t in tasks]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    track = cfg.resource("track")
    ds = ds.map_batches(
        TrackStage,
        fn_constructor_kwargs={"config_json": config_json},
        compute=ActorPoolStrategy(min_size=track.min_actors, max_size=max(track.min_actors, track.max_actors)),
        batch_size=track.batch_size,
        num_gpus=_gpus_for(cfg, "track"),
        num_cpus=track.num_cpus,
        # Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1:
        # a killed actor comes back and its video is tracked again from the start.
    )
    write = cfg.resource("write")
    ds = ds.map_batches(
        WriteStage,
        fn_constructor_kwargs={"config_json": config_json},
        compute=ActorPoolStrategy(size=1),
        batch_size=1,
        num_cpus=write.num_cpus,
    )
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

    DataContext.get_current().enable_progress_bars = False  # ours below is per video
    ds = build_dataset(cfg, todo)
    with _progress(progress, len(todo)) as advance:
        for row in ds.iter_rows():
            if row["status"] == "ok":
                summary.ok += 1
                summary.masks += int(row["num_masks"])
            else:
                summary.failed += 1
                summary.errors.append(f"{row['video_id']}: {row['message']}")
            advance(str(row["video_id"]), str(row["status"]))
    return summary


class _progress:
    """A rich progress bar over videos (or nothing, when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda *_: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("[bold]labelling videos"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("{task.description}"))
        self._p.__enter__()
        self._task = self._p.add_task("", total=self.total)
        return lambda vid, status: self._p.update(self._task, advance=1, description=f"{vid}: {status}")

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False
