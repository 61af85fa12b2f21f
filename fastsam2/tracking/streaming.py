"""Track objects through a streamed video with any SAM2 video predictor.

Stock ``SAM2VideoPredictor.init_state`` loads every frame of a video into one
tensor before tracking starts. Here frames are decoded lazily, in order, as
``propagate_in_video`` asks for them (:class:`StreamedFrames`), and per-frame
outputs that can never be read again are evicted between frames
(:func:`~fastsam2.tracking.memory_bank.evict_unreachable`). The predictor's own
public API (``add_new_points_or_box``, ``propagate_in_video``) does the rest, so
the stock predictor and our pruned subclass run through the same loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from fastsam2.config import ObjectPrompt
from fastsam2.frame_masks import FrameMasks
from fastsam2.prefetch import Prefetcher
from fastsam2.preprocess import preprocess_frame
from fastsam2.tracking.instrument import MS_PREFIX, STATS_KEY
from fastsam2.tracking.memory_bank import evict_unreachable, frame_entry_bytes, memory_bank_bytes, process_memory_bytes


class PromptError(ValueError):
    """A prompt that cannot be used on this video (e.g. outside the frame)."""


def prefetched_frames(frames: Iterable[np.ndarray], image_size: int,
                      depth: int = 2) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """``(RGB, model input)`` per frame, decoded and preprocessed on a background thread
    ``depth`` frames ahead (:class:`~fastsam2.prefetch.Prefetcher`); the RGB frame stays for
    detecting objects that enter later. The thread stops when this generator ends or is
    closed/collected."""
    with Prefetcher(frames, transform=lambda rgb: (rgb, preprocess_frame(rgb, image_size)), depth=depth) as source:
        yield from source


class StreamedFrames:
    """``inference_state["images"]`` that decodes frames on demand, in order.

    Holds only the newest preprocessed frame. SAM2 reads frame ``t`` once
    (its features are then cached by the predictor), so in-order access is all
    forward tracking needs; going back raises a clear error.
    """

    def __init__(self, frames: Iterable[np.ndarray], num_frames: int, image_size: int):
        self._frames = iter(frames)
        self._num_frames = num_frames
        self._image_size = image_size
        self._next = 0
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.rgb: tuple[int, np.ndarray] | None = None  # (index, RGB) of the newest frame, for detection

    def __len__(self) -> int:
        return self._num_frames

    def __getitem__(self, idx: int) -> torch.Tensor:
        if idx in self._cache:
            return self._cache[idx]
        if idx < self._next:
            raise IndexError(f"frame {idx} was already streamed past (frames are read once, in order)")
        if idx >= self._num_frames:
            raise IndexError(f"frame {idx} out of range ({self._num_frames} frames)")
        while self._next <= idx:
            try:
                rgb = next(self._frames)
            except StopIteration:
                raise IndexError(f"video ended at frame {self._next}, expected {self._num_frames}") from None
            if isinstance(rgb, tuple):  # (RGB, tensor) from prefetched_frames
                rgb, tensor = rgb
            else:
                tensor = preprocess_frame(rgb, self._image_size)
            self.rgb = (self._next, rgb)
            self._next += 1
        self._cache = OrderedDict({idx: tensor})
        return tensor


@dataclass
class FrameResult(FrameMasks):
    """Masks of every object on one frame (:class:`~fastsam2.frame_masks.FrameMasks`), with what it cost."""

    ms_total: float
    stats: dict = field(default_factory=dict)  # per-component ms, tokens kept (pruned predictor)
    memory_bank_bytes: int = 0
    frame_bank_bytes: int = 0  # what this frame added to the bank (all objects)
    memory_bytes: int = 0  # CUDA peak allocated, or process RSS on CPU
    new_objects: list[ObjectPrompt] = field(default_factory=list)  # objects that start on this frame


#: ``detector(frame_idx, rgb, tracked_masks [N, H, W] bool, next_obj_id) -> new object prompts``:
#: finds objects that overlap no tracked mask (see fastsam2.prompts.multi.NewObjectDetector).
Detector = Callable[[int, np.ndarray, np.ndarray, int], list[ObjectPrompt]]


def validate_prompts(objects: list[ObjectPrompt], height: int, width: int, num_frames: int | None = None) -> None:
    """Reject prompts outside the frame before any model time is spent."""
    if not objects:
        raise PromptError("no prompt for this video: give --point/--box, manifest prompt columns, or --prompts auto")
    if num_frames is not None and not 0 <= objects[0].frame_idx < num_frames:
        raise PromptError(f"prompt frame {objects[0].frame_idx} is outside the video ({num_frames} frames)")
    for obj in objects:
        if obj.point is None and obj.box is None:
            raise PromptError(f"object {obj.obj_id} has neither a point nor a box")
        if obj.frame_idx != objects[0].frame_idx:
            raise PromptError("all objects of a video must be prompted on the same frame")
        if obj.point is not None:
            x, y = obj.point
            if not (0 <= x < width and 0 <= y < height):
                raise PromptError(f"point ({x:g}, {y:g}) of object {obj.obj_id} is outside the {width}x{height} frame")
        if obj.box is not None:
            x0, y0, x1, y1 = obj.box
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise PromptError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) of object {obj.obj_id} is empty or outside the {width}x{height} frame"
                )


def new_inference_state(predictor, images: StreamedFrames, height: int, width: int,
                        offload_state_to_cpu: bool = False, first_frame: int = 0) -> dict:
    """The dict ``SAM2VideoPredictor.init_state`` builds, over streamed frames.

    Mirrors sam2 1.1.0's ``init_state`` key for key; only the frame source
    differs (nothing is loaded up front), and the warm-up encodes the prompt
    frame (``first_frame``) rather than frame 0, which tracking may never need.
    """
    device = predictor.device
    state: dict = {
        "images": images,
        "num_frames": len(images),
        "offload_video_to_cpu": True,
        "offload_state_to_cpu": offload_state_to_cpu,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    predictor._get_image_feature(state, frame_idx=first_frame, batch_size=1)  # as init_state does
    return state


def _scores(probs: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    inside = masks.flatten(1)
    total = inside.sum(1).clamp(min=1)
    return ((probs.flatten(1) * inside).sum(1) / total).float().cpu().numpy()


@dataclass
class TrackSession:
    """The video a :meth:`StreamingTracker.track` generator is tracking, seen from outside.

    While the generator is suspended after yielding a frame, ``next_frame`` is the frame
    its next step tracks (None: none, or not known), so a scheduler
    (:mod:`fastsam2.tracking.lockstep`) can encode that frame beforehand, batched with
    other videos' frames, into ``state``. Time such a scheduler spends for this video
    goes into ``pending_ms`` and is added to the next frame's ``ms_total``.
    """

    state: dict
    next_frame: int | None = None
    pending_ms: float = 0.0

    def take_ms(self) -> float:
        ms, self.pending_ms = self.pending_ms, 0.0
        return ms


class StreamingTracker:
    """Runs one predictor over streamed videos, one video at a time, memory bounded."""

    def __init__(self, predictor, offload_state_to_cpu: bool = False, bounded_memory: bool = True,
                 shared: bool = False):
        self.predictor = predictor
        self.offload_state_to_cpu = offload_state_to_cpu
        self.bounded_memory = bounded_memory
        # A lockstep view: other videos are live on the same device, so this one must not
        # reset the device's peak-memory counter or empty its allocator cache.
        self.shared = shared
        self.session: TrackSession | None = None  # the video being tracked (between frames)

    def view(self, shared: bool = True) -> StreamingTracker:
        """Another tracker over the same predictor, with a session of its own (one per video
        tracked in lockstep; the predictor's weights are shared, not copied). ``shared``: other
        videos may be live beside it (see ``self.shared``)."""
        return StreamingTracker(self.predictor, self.offload_state_to_cpu, self.bounded_memory, shared=shared)

    @torch.inference_mode()
    def track(
        self,
        frames: Iterable[np.ndarray],
        num_frames: int,
        height: int,
        width: int,
        objects: list[ObjectPrompt],
        text: str | None = None,
        detector: Detector | None = None,
        detect_every: int | None = None,
    ) -> Iterator[FrameResult]:
        """Yield one :class:`FrameResult` per frame, in order, from the prompt frame on.

        Each object's own ``text`` (if any) is its router phrase, over the video's
        ``text``. With ``detector`` and ``detect_every``, every ``detect_every``-th
        frame after the first is searched for objects that overlap no tracked
        mask; each new one is added on that frame with a new id (sam2 accepts new
        ids after tracking has started) and tracked from there on. Frames are still
        read once and encoded once: the new object's prompt uses the frame's cached
        features, and propagation resumes on the next frame.
        """
        validate_prompts(objects, height, width, num_frames)
        start = objects[0].frame_idx
        p = self.predictor
        device = p.device
        if device.type == "cuda" and not self.shared:
            torch.cuda.reset_peak_memory_stats(device)
        images = StreamedFrames(prefetched_frames(frames, p.image_size), num_frames, p.image_size)
        t0 = time.perf_counter()
        state = new_inference_state(p, images, height, width, self.offload_state_to_cpu, first_frame=start)
        session = self.session = TrackSession(state)
        if hasattr(p, "set_video_text"):
            p.set_video_text(state, text)
        for obj in objects:
            self._add_object(state, start, obj)
        next_id = max(o.obj_id for o in objects) + 1
        peak = 0
        resume_at: int | None = start
        while resume_at is not None:
            frames_iter = p.propagate_in_video(state, start_frame_idx=resume_at)
            resume_at = None
            for frame_idx, obj_ids, logits in frames_iter:
                new: list[ObjectPrompt] = []
                if detector is not None and detect_every and frame_idx > start and (frame_idx - start) % detect_every == 0:
                    rgb_idx, rgb = images.rgb
                    assert rgb_idx == frame_idx, "detection needs the frame being tracked"
                    new = detector(frame_idx, rgb, (logits[:, 0] > 0.0).cpu().numpy(), next_id)
                    for obj in new:
                        obj.frame_idx = frame_idx
                        frame_idx, obj_ids, logits = self._add_object(state, frame_idx, obj)
                        next_id = max(next_id, obj.obj_id + 1)
                    if new and frame_idx + 1 < num_frames:
                        resume_at = frame_idx + 1  # propagation restarts after the new objects' frame
                probs = torch.sigmoid(logits[:, 0].float())
                masks = logits[:, 0] > 0.0
                scores = _scores(probs, masks)
                masks_np = masks.cpu().numpy()
                frame_bytes = frame_entry_bytes(state, frame_idx)
                if self.bounded_memory:
                    evict_unreachable(p, state, frame_idx)
                bank = memory_bank_bytes(state, include_masks=False)
                peak = max(peak, process_memory_bytes(device))
                now = time.perf_counter()
                per_frame = state.get(STATS_KEY, {})
                stats = dict(per_frame.pop(frame_idx, {}) or {})
                for late in [t for t in per_frame if t < frame_idx]:  # e.g. a new object's memory, encoded on resume
                    for key, value in per_frame.pop(late).items():
                        if key.startswith(MS_PREFIX) and isinstance(value, (int, float)):
                            stats[key] = stats.get(key, 0.0) + value
                session.next_frame = frame_idx + 1 if frame_idx + 1 < num_frames else None
                yield FrameResult(
                    frame_idx=frame_idx,
                    obj_ids=list(obj_ids),
                    masks=masks_np,
                    scores=scores,
                    ms_total=(now - t0) * 1000.0 + session.take_ms(),
                    stats=stats,
                    memory_bank_bytes=bank,
                    frame_bank_bytes=frame_bytes,
                    memory_bytes=peak,
                    new_objects=new,
                )
                session.next_frame = None
                t0 = time.perf_counter()  # time spent by the consumer is not the tracker's
                if resume_at is not None:
                    frames_iter.close()
                    break

    def _add_object(self, state: dict, frame_idx: int, obj: ObjectPrompt):
        """Prompt one object on ``frame_idx``; returns sam2's (frame_idx, obj_ids, masks) of all objects."""
        p = self.predictor
        if hasattr(p, "set_object_text") and obj.text:
            p.set_object_text(state, obj.obj_id, obj.text)
        points = labels = None
        if obj.point is not None:
            points = np.array([obj.point], dtype=np.float32)
            labels = np.array([1], dtype=np.int32)
        box = np.array(obj.box, dtype=np.float32) if obj.box is not None else None
        return p.add_new_points_or_box(state, frame_idx=frame_idx, obj_id=obj.obj_id, points=points, labels=labels, box=box)
