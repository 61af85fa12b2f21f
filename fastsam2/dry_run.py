"""``run --dry-run``: what a run would do, found without starting Ray or loading a model.

Lists the videos the inputs name, which are already done under ``--output``,
each video's prompts, the stages the dataset would chain and each stage's
resources, and where the SAM2 weights would come from (no network is used).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastsam2.config import JobConfig, VideoTask


@dataclass
class Plan:
    cfg: JobConfig
    tasks: list[VideoTask]
    todo: list[VideoTask]
    stages: list[str]
    gpus: dict[str, float]
    weights: str

    @property
    def done(self) -> set[str]:
        todo = {t.video_id for t in self.todo}
        return {t.video_id for t in self.tasks if t.video_id not in todo}


def _weights(cfg: JobConfig) -> str:
    """Where SAM2's weights would come from, looked up locally only."""
    m = cfg.model
    if m.random_weights:
        return "RANDOM WEIGHTS (no checkpoint; masks meaningless)"
    if m.sam2_checkpoint:
        return f"{m.sam2_checkpoint} ({m.sam2_config})"
    from fastsam2.models.weights import REGISTRY, SAM2_CONFIGS, local_checkpoint

    if m.sam2_config not in SAM2_CONFIGS:
        return f"unknown config {m.sam2_config}"
    known = REGISTRY[m.sam2_config]
    if (local := local_checkpoint(known)) is not None:
        return f"{local[0]} ({local[1]})"
    return f"official {m.sam2_config}: not cached, would be downloaded ({known.hf_repo or known.url})"


def plan(cfg: JobConfig, local_gpus: float | None = None) -> Plan:
    """The plan of ``cfg``: discovery and done-marker listing only (Ray is not started)."""
    from fastsam2.pipeline import plan_stages, plan_tasks
    from fastsam2.placement import ClusterGPUs

    tasks, todo = plan_tasks(cfg)
    if local_gpus is None:
        import torch

        local_gpus = float(torch.cuda.device_count())
    stages = plan_stages(cfg, todo or tasks, ClusterGPUs(now=local_gpus))
    return Plan(cfg, tasks, todo, stages.names, stages.gpus, _weights(cfg))


def _prompt(t: VideoTask) -> str:
    if not t.objects:
        return "auto (RPN box + click)" if t.prompt_source == "auto" else "none: will fail (no prompt)"
    parts = []
    for o in t.objects:
        what = " ".join(s for s in (
            f"point {o.point[0]:g},{o.point[1]:g}" if o.point else "",
            "box " + ",".join(f"{v:g}" for v in o.box) if o.box else "",
        ) if s)  # fmt: skip
        parts.append(f"obj {o.obj_id}: {what}" + (f" @frame {o.frame_idx}" if o.frame_idx else ""))
    return "; ".join(parts)


def print_plan(p: Plan, max_rows: int = 200) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if console_is_tty() else 200)
    cfg = p.cfg
    console.print(f"[bold]Dry run[/] (Ray not started, nothing written): {len(p.tasks)} video(s) found, "
                  f"{len(p.done)} already done under {cfg.output}, {len(p.todo)} to label.")
    videos = Table(title="Videos", title_justify="left")
    for h in ("Video", "Status", "Source", "Prompt", "Text", "URI"):
        videos.add_column(h)
    for t in p.tasks[:max_rows]:
        status = "done (skipped)" if t.video_id in p.done else "to do"
        videos.add_row(t.video_id, status, t.prompt_source or "", _prompt(t), t.text or "", t.uri)
    console.print(videos)
    if len(p.tasks) > max_rows:
        console.print(f"... and {len(p.tasks) - max_rows} more")
    stages = Table(title="Stages (each a pool of Ray actors)", title_justify="left")
    for h in ("Stage", "GPUs/actor", "CPUs/actor", "Actors", "Batch"):
        stages.add_column(h, justify="left" if h == "Stage" else "right")
    for name in p.stages:
        r = cfg.resource(name)
        stages.add_row(name, f"{p.gpus[name]:g}" if name in p.gpus else "vLLM engine", f"{r.num_cpus:g}", f"{r.min_actors}-{r.max_actors}", str(r.batch_size))
    console.print(stages)
    console.print(f"SAM2: {cfg.model.sam2_config} at {cfg.model.image_size} px on {cfg.model.device}; "
                  f"keep ratio {cfg.pruning.keep_ratio:g}; weights: {p.weights}")


def console_is_tty() -> bool:
    import sys

    return sys.stdout.isatty()
