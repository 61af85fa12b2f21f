"""The Python API: label one video in-process, or run the whole pipeline, without the CLI.

:func:`label_video` uses the tracker the pipeline's SAM2 actors use
(:func:`fastsam2.tracking.factory.build_tracker`, same config fields, same
defaults) and yields one :class:`FrameLabels` per frame as it is tracked: no
Ray, nothing written. :func:`run` is ``fastsam2-batch run`` as a function: the
same option names as the flags (``keep_ratio=0.5``, ``random_weights=True``) and
the same validation, returning the run's summary.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastsam2.config import JobConfig, ObjectPrompt
from fastsam2.frame_masks import FrameMasks


@dataclass
class FrameLabels(FrameMasks):
    """Masks of every prompted object on one frame (:class:`~fastsam2.frame_masks.FrameMasks`:
    ``frame_idx``, ``obj_ids``, ``masks``, ``scores``, ``rle()``), and what the frame cost."""

    stats: dict[str, Any] = field(default_factory=dict)  # ms_total, ms_<component>, tokens_kept/_total, memory
    random_weights: bool = False  # True: the model had no trained weights, the masks are meaningless


_TRACKERS: dict[str, Any] = {}  # one warm tracker, keyed by the model and pruning settings


def _tracker(cfg: JobConfig):
    from fastsam2.tracking.factory import build_tracker

    key = cfg.model.model_dump_json() + cfg.pruning.model_dump_json()
    if key not in _TRACKERS:
        _TRACKERS.clear()  # hold at most one model
        _TRACKERS[key] = build_tracker(cfg)
    return _TRACKERS[key]


def _frames_source(video: Any, cfg: JobConfig) -> tuple[Iterable[np.ndarray], int, int, int]:
    """(frames, count, height, width) of a path/URI or of in-memory RGB frames."""
    if isinstance(video, (str, os.PathLike)):
        from fastsam2.sources import FrameReader, discover

        tasks = discover([os.fspath(video)], cfg.storage_options)
        if len(tasks) != 1:
            raise ValueError(f"{video} holds {len(tasks)} videos; label_video takes one (use fastsam2.run for many)")
        reader = FrameReader(tasks[0], cfg.storage_options, max_frames=cfg.max_frames)
        return reader, reader.info.num_frames, reader.info.height, reader.info.width
    frames = list(video) if not isinstance(video, (np.ndarray, Sequence)) else video
    if len(frames) == 0:
        raise ValueError("no frames given")
    if cfg.max_frames:
        frames = frames[: cfg.max_frames]
    first = np.asarray(frames[0])
    if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
        raise ValueError(f"frames must be RGB uint8 arrays of shape (H, W, 3), got {first.dtype} {first.shape}")
    return (np.asarray(f) for f in frames), len(frames), first.shape[0], first.shape[1]


def label_video(
    video: str | os.PathLike | Sequence[np.ndarray] | np.ndarray,
    point: Sequence[float] | None = None,
    box: Sequence[float] | None = None,
    text: str | None = None,
    keep_ratio: float = 0.3,
    device: str = "auto",
    *,
    semantic: str = "clip",
    uncertainty: str = "closed_form",
    objects: Sequence[ObjectPrompt | dict] | None = None,
    frame_idx: int = 0,
    sam2_config: str = "sam2.1_hiera_t",
    checkpoint: str | None = None,
    image_size: int = 1024,
    random_weights: bool = False,
    max_frames: int | None = None,
    storage_options: dict | None = None,
    precision: str = "auto",
) -> Iterator[FrameLabels]:
    """Track the prompted object(s) through one video; yields a :class:`FrameLabels` per frame.

    ``video`` is a video file, a folder of frames or an ``s3://`` URI of either,
    or RGB uint8 frames (a ``(T, H, W, 3)`` array or a list of ``(H, W, 3)``).
    Prompt one object with ``point=(x, y)`` and/or ``box=(x0, y0, x1, y1)`` on
    ``frame_idx``, or several with ``objects=[{"obj_id": 1, "point": [x, y]}, ...]``.
    ``text`` names the object for the pruning router (``semantic``/``uncertainty``
    choose its signals, as ``--semantic``/``--uncertainty``). Frames before the prompt
    frame are not yielded. The model is built on the first call and kept warm
    for the next one with the same settings. ``precision`` is ``--precision`` (auto: bf16
    autocast on CUDA, fp32 on CPU).
    """
    if objects is None:
        if point is None and box is None:
            raise ValueError("give point=(x, y), box=(x0, y0, x1, y1) or objects=[...] (automatic prompts: fastsam2.run)")
        objects = [ObjectPrompt(obj_id=1, point=list(point) if point is not None else None,
                                box=list(box) if box is not None else None, frame_idx=frame_idx)]
    prompts = [o if isinstance(o, ObjectPrompt) else ObjectPrompt.model_validate({"frame_idx": frame_idx, **o})
               for o in objects]  # fmt: skip
    cfg = JobConfig(inputs=["<api>"], output="<api>", storage_options=storage_options or {}, max_frames=max_frames,
                    model={"sam2_config": sam2_config, "sam2_checkpoint": checkpoint, "image_size": image_size,
                           "device": device, "random_weights": random_weights, "precision": precision},
                    pruning={"keep_ratio": keep_ratio, "semantic": semantic, "uncertainty": uncertainty})  # fmt: skip
    frames, num_frames, height, width = _frames_source(video, cfg)
    from fastsam2.tracking.streaming import validate_prompts

    validate_prompts(prompts, height, width, num_frames)  # before any model is built
    tracker = _tracker(cfg)
    rw = cfg.model.random_weights  # the tracker was built from cfg: its weights are random exactly then

    def frames_out() -> Iterator[FrameLabels]:
        for fr in tracker.track(frames, num_frames, height, width, prompts, text):
            stats = {"ms_total": fr.ms_total, **fr.stats, "memory_bank_bytes": fr.memory_bank_bytes,
                     "memory_bytes": fr.memory_bytes}  # fmt: skip
            yield FrameLabels(fr.frame_idx, fr.obj_ids, fr.masks, fr.scores, stats, rw)

    return frames_out()


def run(inputs: str | Sequence[str], output: str, *, progress: bool = False, address: str | None = None,
        **options: Any):
    """Run the pipeline on ``inputs`` into ``output``, as ``fastsam2-batch run`` does; returns its summary.

    ``options`` are the ``run`` flags with underscores: ``keep_ratio=0.5``,
    ``random_weights=True``, ``image_size=512``, ``point=(x, y)``, ``box=(...)``,
    ``text="a dog"``, ``config_file="job.yaml"``, ``resource_overrides=["track.max_actors=2"]``...
    Bad options raise ``ValueError`` naming the option. Starts (or joins) Ray.
    """
    import click

    from fastsam2.cli.options import build_config, job_options
    from fastsam2.pipeline import run_pipeline

    known = {p.name for p in job_options(lambda **kw: None).__click_params__} - {"output"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; options are {', '.join(sorted(known))}")
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    for name in ("point", "box"):
        if options.get(name) is not None and not isinstance(options[name], str):
            options[name] = ",".join(str(v) for v in options[name])
    if isinstance(options.get("storage_options"), dict):
        import json

        options["storage_options"] = json.dumps(options["storage_options"])
    try:
        cfg = build_config(tuple(os.fspath(i) for i in inputs), output=os.fspath(output), **options)
    except click.ClickException as exc:
        raise ValueError(exc.format_message()) from None
    return run_pipeline(cfg, progress=progress, address=address)
