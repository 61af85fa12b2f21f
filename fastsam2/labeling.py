"""Label one video end to end, without Ray: read, validate prompts, track, encode, measure.

:func:`label_video` is what the tracking actor calls per video; tests call it
directly. It returns the rows of every output table for that video, so writing
(and retrying the write) is a separate step.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

import torch

from fastsam2 import rle
from fastsam2.config import JobConfig, ObjectPrompt, VideoTask
from fastsam2.models.weights import known_weights
from fastsam2.schema import COMPONENTS
from fastsam2.sources import FrameReader
from fastsam2.tracking.streaming import Detector, StreamingTracker

log = logging.getLogger(__name__)


@dataclass
class VideoResult:
    """Rows for masks/, frames/, objects/ and videos/ of one video."""

    video_id: str
    masks: list[dict] = field(default_factory=list)
    frames: list[dict] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)
    video: dict | None = None


def error_row(task: VideoTask, stage: str, exc: BaseException, run_id: str) -> dict:
    return {
        "video_id": task.video_id,
        "uri": task.uri,
        "source_id": task.source_id,
        "stage": stage,
        "error_type": type(exc).__name__,
        "message": str(exc) or repr(exc),
        "run_id": run_id,
        "failed_at": dt.datetime.now(dt.timezone.utc),
    }


def _median(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def _mask_rows(result: VideoResult, video_id: str, fr, frame_idx: int, height: int, width: int,
               keep=lambda obj_id: True) -> None:
    """masks/ rows of one tracked frame (``frame_idx`` in the original video's numbering)."""
    for obj_id, mask, score in zip(fr.obj_ids, fr.masks, fr.scores):
        if not keep(int(obj_id)):
            continue
        counts, area, bbox = rle.encode(mask)
        result.masks.append(
            {
                "video_id": video_id,
                "obj_id": int(obj_id),
                "frame_idx": frame_idx,
                "height": height,
                "width": width,
                "rle": counts,
                "area": area,
                "bbox": bbox,
                "score": float(score) if area else 0.0,
            }
        )


class _ObjectsOnSchedule:
    """Detector for the reverse pass: each object starts on its own (reversed) first frame."""

    def __init__(self, schedule: dict[int, list[ObjectPrompt]]):
        self.schedule = schedule

    def __call__(self, frame_idx, rgb, tracked, next_id) -> list[ObjectPrompt]:
        return [o.model_copy() for o in self.schedule.get(frame_idx, [])]


def _track_backward(task: VideoTask, tracker: StreamingTracker, cfg: JobConfig, late: list[ObjectPrompt],
                    first_seen: dict[int, int], result: VideoResult) -> Iterator[int]:
    """``--bidirectional``: track objects found after frame 0 back to frame 0.

    The frames up to the latest such object's first frame are decoded again and
    played in reverse as a forward stream, so the same streaming loop (and its
    bounded memory bank) runs; each object is prompted on its own first frame
    with its forward prompt and adds rows only before that frame. Those frames
    are encoded a second time (counted in ``frames/``'s ``encoder_calls``) and
    the decoded prefix is held in memory during this pass.
    """
    last = max(first_seen[o.obj_id] for o in late)
    reader = FrameReader(task, cfg.storage_options, max_frames=last + 1)
    prefix = [frame for _, frame in zip(range(last + 1), iter(reader))]
    info = reader.info
    schedule: dict[int, list[ObjectPrompt]] = {}
    for o in late:
        r = last - first_seen[o.obj_id]
        schedule.setdefault(r, []).append(o.model_copy(update={"frame_idx": r}))
    rows = {r["frame_idx"]: r for r in result.frames}
    for fr in tracker.track(reversed(prefix), len(prefix), info.height, info.width, schedule.pop(0), task.text,
                            detector=_ObjectsOnSchedule(schedule), detect_every=1):
        t = last - fr.frame_idx
        _mask_rows(result, task.video_id, fr, t, info.height, info.width, keep=lambda i: t < first_seen[i])
        calls = fr.stats.get("encoder_calls") or 0
        if t in rows:
            rows[t]["encoder_calls"] = (rows[t]["encoder_calls"] or 0) + calls
        else:
            row = {"video_id": task.video_id, "frame_idx": t, "ms_total": fr.ms_total, "encoder_calls": calls,
                   "memory_bank_bytes": fr.memory_bank_bytes, "memory_bytes": fr.memory_bytes}
            rows[t] = row
            result.frames.append(row)
        yield t
    for o in late:
        first_seen[o.obj_id] = 0


def object_row(task: VideoTask, obj: ObjectPrompt, cfg: JobConfig, first_frame_idx: int | None) -> dict:
    """The objects/ row of one tracked object (see ``fastsam2.schema.OBJECTS``)."""
    source = obj.source or task.prompt_source or "user"
    return {
        "video_id": task.video_id,
        "obj_id": obj.obj_id,
        "first_frame_idx": obj.frame_idx if first_frame_idx is None else first_frame_idx,
        "prompt_frame_idx": obj.frame_idx,
        "box": obj.box,
        "point": obj.point,
        "objectness": obj.objectness,
        "caption": obj.caption,
        "phrase": obj.text or task.text,
        "clip_score": obj.clip_score,
        "prompt_source": source,
        "caption_backend": task.caption_backend if obj.caption else None,
        "caption_model": task.caption_model if obj.caption else None,
        "detector_model": cfg.prompts.detector_weights or "rpn" if source != "user" else None,
        "model": known_weights(cfg.model.sam2_config).name,
        "random_weights": cfg.model.random_weights,
        "run_id": cfg.run_id,
    }


def label_video(task: VideoTask, tracker: StreamingTracker, cfg: JobConfig, progress=None,
                detector: Detector | None = None) -> VideoResult:
    """Track every prompted object of ``task`` through the video and collect its rows.

    With ``detector`` (and ``cfg.prompts.detect_every``) objects that enter later
    are found and tracked from their first frame; they get objects/ rows too.
    """
    steps = label_video_steps(task, tracker, cfg, progress, detector)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def label_video_steps(task: VideoTask, tracker: StreamingTracker, cfg: JobConfig, progress=None,
                      detector: Detector | None = None) -> Generator[int, None, VideoResult]:
    """:func:`label_video` as a coroutine: yields each tracked frame's index, returns the
    :class:`VideoResult`, so a scheduler can advance several videos in lockstep
    (:func:`fastsam2.tracking.lockstep.run_lockstep`)."""
    reader = FrameReader(task, cfg.storage_options, max_frames=cfg.max_frames)
    info = reader.info
    result = VideoResult(task.video_id)
    predictor = tracker.predictor
    peak_bank = 0
    bank_per_frame: list[float] = []
    objects = list(task.objects)
    first_seen: dict[int, int] = {}
    for fr in tracker.track(iter(reader), info.num_frames, info.height, info.width, task.objects, task.text,
                            detector=detector, detect_every=cfg.prompts.detect_every if detector else None):
        objects.extend(fr.new_objects)
        for obj_id in fr.obj_ids:
            first_seen.setdefault(int(obj_id), fr.frame_idx)
        _mask_rows(result, task.video_id, fr, fr.frame_idx, info.height, info.width)
        row = {
            "video_id": task.video_id,
            "frame_idx": fr.frame_idx,
            "ms_total": fr.ms_total,
            "tokens_kept": fr.stats.get("tokens_kept"),
            "tokens_total": fr.stats.get("tokens_total"),
            "memory_bank_bytes": fr.memory_bank_bytes,
            "memory_bytes": fr.memory_bytes,
            "encoder_calls": fr.stats.get("encoder_calls"),
        }
        for c in COMPONENTS:
            row[f"ms_{c}"] = fr.stats.get(f"ms_{c}")
        result.frames.append(row)
        peak_bank = max(peak_bank, fr.memory_bank_bytes)
        bank_per_frame.append(fr.frame_bank_bytes)
        if progress is not None:
            progress(fr.frame_idx + 1, info.num_frames)
        yield fr.frame_idx

    if cfg.prompts.bidirectional:
        late = [o for o in objects if first_seen.get(o.obj_id, 0) > 0]
        if late:
            yield from _track_backward(task, tracker, cfg, late, first_seen, result)
            result.masks.sort(key=lambda r: (r["frame_idx"], r["obj_id"]))
            result.frames.sort(key=lambda r: r["frame_idx"])

    frames = result.frames
    # The first tracked (prompt) frame carries warm-up and prompt encoding; steady state is what matters.
    steady = frames[1:] or frames
    ms_per_frame = _median([f["ms_total"] for f in steady])
    kept = [f["tokens_kept"] / f["tokens_total"] for f in steady if f["tokens_kept"] and f["tokens_total"]]
    first = task.objects[0] if task.objects else None
    result.video = {
        "video_id": task.video_id,
        "uri": task.uri,
        "source_id": task.source_id,
        "status": "ok",
        "num_frames": info.num_frames,
        "height": info.height,
        "width": info.width,
        "num_objects": len(objects),
        "prompt_source": task.prompt_source or "user",
        "point": first.point if first else None,
        "box": first.box if first else None,
        "prompt_frame_idx": first.frame_idx if first else None,
        "text": task.text,
        "caption": task.caption,
        "objectness": task.objectness,
        "caption_backend": task.caption_backend,
        "caption_model": task.caption_model,
        "model": known_weights(cfg.model.sam2_config).name,
        "checkpoint": None if cfg.model.random_weights else (cfg.model.sam2_checkpoint or "official"),
        "random_weights": cfg.model.random_weights,
        "keep_ratio": cfg.pruning.keep_ratio,
        "image_size": cfg.model.image_size,
        "device": str(predictor.device),
        "fps": 1000.0 / ms_per_frame if ms_per_frame else None,
        "ms_per_frame": ms_per_frame,
        "peak_memory_bytes": max((f["memory_bytes"] for f in frames), default=None),
        "memory_bank_bytes": peak_bank,
        "memory_bank_bytes_per_frame": _median(bank_per_frame[1:] or bank_per_frame),
        "tokens_kept": sum(kept) / len(kept) if kept else (1.0 if cfg.pruning.keep_ratio >= 1.0 else None),
        "run_id": cfg.run_id,
        "finished_at": dt.datetime.now(dt.timezone.utc),
    }
    result.objects = [object_row(task, o, cfg, first_seen.get(o.obj_id)) for o in objects]
    for c in COMPONENTS:
        result.video[f"ms_{c}"] = _median([f[f"ms_{c}"] for f in steady])
    if torch.cuda.is_available() and predictor.device.type == "cuda" and not tracker.shared:
        torch.cuda.empty_cache()  # not while other videos of a lockstep batch are live
    return result
