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
from fastsam2.placement import (  # gpu_plan, PlacementError: re-exported, their old home
    ClusterGPUs,
    PlacementError,
    check_placeable,
    gpu_plan,
    read_cluster,
)
from fastsam2.sources import InputError, discover
from fastsam2.stage_specs import CAPTION, needed_stages
from fastsam2.storage import is_remote, recorded_ids, strip_protocol

log = logging.getLogger(__name__)

#: Exit status of ``run``, ``demo`` and ``python -m fastsam2.job``: every video ok or already done.
EXIT_OK = 0
#: The run could not start: bad config, input, output root or weights (nothing was labelled).
EXIT_SETUP = 2
#: The run finished but at least one video failed (its errors/ row says why; a re-run retries it).
EXIT_VIDEOS_FAILED = 3


class SetupError(InputError):
    """Found on the driver before Ray starts: one line naming the cause."""


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


def exit_code(summary: RunSummary) -> int:
    """:data:`EXIT_VIDEOS_FAILED` when any video failed, else :data:`EXIT_OK`."""
    return EXIT_VIDEOS_FAILED if summary.failed else EXIT_OK


RANDOM_BANNER = (
    "!! RANDOM WEIGHTS: no trained checkpoint was used; masks, boxes and captions are meaningless. "
    "Use this run for plumbing and speed only. !!"
)


def print_summary(summary: RunSummary) -> None:
    """The run's summary on stdout, as ``run``, ``demo`` and the job entry point print it."""
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


def check_output_root(root: str) -> None:
    """A local output root must be a folder we can write (or be creatable): found before any work."""
    if is_remote(root):
        return  # an object store is probed by writing the settings file
    path = os.path.abspath(strip_protocol(root))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        what = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise SetupError(f"--output {root} {what}; give a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SetupError(f"--output {root}: no permission to write in {probe}")


def preflight(cfg: JobConfig) -> None:
    """Everything the driver can check before Ray starts, each failure one line (:class:`SetupError`)."""
    from fastsam2.models.checkpoint import UnsafeCheckpoint, load_mapping
    from fastsam2.models.sam2 import config_file

    check_output_root(cfg.output)
    try:
        config_file(cfg.model.sam2_config)
    except ValueError as exc:
        raise SetupError(f"--sam2-config: {exc}") from None
    local_weights = {"--sam2-checkpoint": cfg.model.sam2_checkpoint,
                     "--detector-weights": None if cfg.prompts.detector_weights == "default" else cfg.prompts.detector_weights}
    for flag, path in local_weights.items():
        if path and "://" not in path and not cfg.model.random_weights:
            try:  # mapped, not read: cheap even for a large checkpoint
                load_mapping(path, flag.removeprefix("--").replace("-", " "), mmap=True)
            except (UnsafeCheckpoint, FileNotFoundError) as exc:
                raise SetupError(f"{flag}: {exc}") from None
    if cfg.pruning.router_weights:
        from fastsam2.tracking.router import WEIGHTS_FORMAT

        try:
            blob = load_mapping(cfg.pruning.router_weights, "router weights")
        except (UnsafeCheckpoint, FileNotFoundError) as exc:
            raise SetupError(f"--router-weights: {exc}") from None
        if blob.get("format") != WEIGHTS_FORMAT:
            raise SetupError(f"--router-weights: {cfg.pruning.router_weights} is not a fastsam2 router "
                             "weights file (make one with train-router)")


def record_settings(cfg: JobConfig) -> None:
    """Record the run's settings at the output root, or stop when it holds other ones."""
    from fastsam2.run_settings import MixedSettings, check_and_record

    try:
        check_and_record(cfg)
    except MixedSettings as exc:
        raise SetupError(str(exc)) from None
    except OSError as exc:
        raise SetupError(f"--output {cfg.output}: cannot write there ({type(exc).__name__}: {exc})") from None


def plan_tasks(cfg: JobConfig) -> tuple[list[VideoTask], list[VideoTask]]:
    """(all tasks, tasks still to do) with the job-wide prompt options applied.

    A video is done when a ``videos/`` row records its URI; it keeps the id stored
    there (and one that only failed keeps its ``errors/`` id), whatever else is in
    the inputs now.
    """
    done = recorded_ids(cfg.output, "videos", cfg.storage_options)
    failed = recorded_ids(cfg.output, "errors", cfg.storage_options)
    tasks = discover(cfg.inputs, cfg.storage_options, recorded={**failed, **done})
    p = cfg.prompts
    for t in tasks:
        if not t.objects and (p.point or p.box):
            t.objects = [ObjectPrompt(obj_id=1, point=p.point, box=p.box)]
        if p.text and not t.text:
            t.text = p.text
        # A user click or box skips the automatic steps; so does --prompts user
        # (a video without a prompt then fails with a clear "no prompt" error).
        t.prompt_source = "user" if t.objects or p.mode == "user" else "auto"
    return tasks, [t for t in tasks if done.get(t.uri) != t.video_id]


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
        # Ray warns once per actor that its "constructor arguments are in the object store":
        # that is Ray Data's own serialised UDF (always passed by reference), not this small
        # config; the operator holds that reference for its lifetime, so restarts still work.
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
    names = needed_stages(cfg, tasks)
    served = CAPTION.name in names and caption_served(cfg)
    cluster = cluster or read_cluster()
    gpus = gpu_plan(cfg, [n for n in names if not (served and n == CAPTION.name)], cluster)
    check_placeable(cfg, gpus, cluster)
    return StagePlan(names, gpus, served)


def build_dataset(cfg: JobConfig, tasks: list[VideoTask], plan: StagePlan | None = None):
    """The lazy Ray Dataset: one row per video in, one summary row per video out."""
    import ray

    from fastsam2 import stages  # read at call time: a test may put a subclass of a stage in STAGE_CLASSES

    plan = plan or plan_stages(cfg, tasks)
    config_json = cfg.model_dump_json()
    rows = [{"video_id": t.video_id, "task": t.model_dump_json()} for t in tasks]
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    for name in plan.names:
        if plan.served_caption and name == CAPTION.name:
            from fastsam2.prompts.caption_vllm import served_caption_stage

            ds = served_caption_stage(ds, cfg)  # vLLM engines request their own GPUs
        else:
            ds = _actor_stage(ds, stages.STAGE_CLASSES[name], cfg, name, config_json, plan.gpus[name])
    return ds


def run_pipeline(cfg: JobConfig, progress: bool = True, address: str | None = None) -> RunSummary:
    """Label every video of ``cfg.inputs`` not yet done under ``cfg.output``.

    Raises :class:`SetupError` (and :class:`~fastsam2.sources.InputError`) before Ray starts.
    """
    preflight(cfg)
    tasks, todo = plan_tasks(cfg)
    record_settings(cfg)
    summary = RunSummary(output=cfg.output, run_id=cfg.run_id, total=len(tasks), skipped=len(tasks) - len(todo),
                         random_weights=cfg.model.random_weights)
    if not todo:
        return summary
    init_ray(address)
    from ray.data import DataContext

    from fastsam2.logs import quiet_ray_data
    from fastsam2.placement import PlacementWatchdog
    from fastsam2.progress import ProgressLogger

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # ours below is per video
    ctx.execution_no_progress_timeout_s = cfg.no_progress_timeout_s or -1  # -1: never
    quiet_ray_data()
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
