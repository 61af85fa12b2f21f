"""Several objects per frame from class-agnostic proposals.

The detector's proposals overlap heavily (the RPN fires many boxes on one
object), so the prompts of a frame are picked in three steps:

1. box filter (size relative to the frame, :class:`~fastsam2.prompts.proposals.BoxFilter`)
   and the objectness threshold;
2. class-agnostic box NMS (``nms_iou``);
3. SAM2's coarse mask for each surviving box (the frame encoded once); a box
   whose mask overlaps an already kept object's mask by ``dedup_mask_iou`` or
   more is the same object seen through another box and counts once.

Each kept object gets its own distance-transform click (the most interior
point of its coarse mask). :class:`NewObjectDetector` is the mid-video variant: it
keeps only proposals that overlap no tracked object's current mask, and only
as many as the video's ``max_objects`` (a cap on all its objects) leaves free.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fastsam2.config import ObjectPrompt
from fastsam2.prompts.caption import Captioner
from fastsam2.prompts.click import CoarseMasker, clip_mask_to_box, representative_click
from fastsam2.prompts.proposals import BoxFilter, NoProposalError, Proposer, filter_proposals
from fastsam2.prompts.refine import refine_caption

if TYPE_CHECKING:
    from fastsam2.prompts.grounding import Grounded, RegionTextScorer

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass
class FoundObject:
    """One object found on a frame: its box, objectness, click and coarse mask."""

    box: Box
    objectness: float
    point: tuple[float, float]
    point_from_mask: bool
    mask: np.ndarray = field(repr=False)  # HxW bool coarse SAM2 mask


@dataclass(frozen=True)
class MultiObjectSettings:
    """How many objects, and which proposals count (see the module docstring).

    ``max_objects`` caps the objects of a video in total, late ones included
    (:class:`NewObjectDetector`).
    """

    max_objects: int = 5
    threshold: float = 0.5
    nms_iou: float = 0.5
    dedup_mask_iou: float = 0.7
    box_filter: BoxFilter = BoxFilter()


def box_nms(boxes: Sequence[Sequence[float]], scores: Sequence[float], iou: float) -> list[int]:
    """Indices of the boxes kept by class-agnostic NMS, best score first."""
    import torch
    from torchvision.ops import nms

    if not len(boxes):
        return []
    keep = nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), float(iou))
    return [int(i) for i in keep]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _region(mask: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The coarse mask clipped to its box; the filled box when SAM2 found nothing in it."""
    clipped = clip_mask_to_box(mask, box)
    return clipped if clipped.any() else clip_mask_to_box(np.ones_like(mask, dtype=bool), box)


def objects_on_frame(frame: np.ndarray, proposer: Proposer, masker: CoarseMasker,
                     settings: MultiObjectSettings = MultiObjectSettings(),
                     exclude: Sequence[np.ndarray] = (), exclude_iou: float | None = None) -> list[FoundObject]:
    """Up to ``settings.max_objects`` distinct objects on ``frame``, best objectness first.

    ``exclude`` (masks of objects already tracked) drops any candidate whose
    coarse mask overlaps one of them by ``exclude_iou`` or more.
    """
    h, w = frame.shape[:2]
    props = [p for p in filter_proposals(proposer.propose(frame), h, w, settings.box_filter) if p.score > settings.threshold]
    if not props:
        return []
    keep = box_nms([p.box for p in props], [p.score for p in props], settings.nms_iou)
    # Coarse masks for more candidates than needed: dedup and exclusion remove some.
    cands = [props[i] for i in keep][: 3 * settings.max_objects]
    # Clipped to its box: a coarse mask spilling out of the box is noise, not the object.
    masks = [_region(m, p.box) for m, p in zip(masker.masks(frame, [p.box for p in cands]), cands)]
    found: list[FoundObject] = []
    for prop, mask in zip(cands, masks):
        if any(mask_iou(mask, f.mask) >= settings.dedup_mask_iou for f in found):
            continue
        if exclude_iou is not None and any(mask_iou(mask, m) >= exclude_iou for m in exclude):
            continue
        click = representative_click(mask, prop.box)  # box centre region when SAM2's mask was empty
        found.append(FoundObject(tuple(float(v) for v in prop.box), float(prop.score), click.point, click.from_mask, mask))
        if len(found) >= settings.max_objects:
            break
    return found


def find_objects(frames: Iterable[np.ndarray], proposer: Proposer, masker: CoarseMasker,
                 settings: MultiObjectSettings = MultiObjectSettings(), max_frames: int = 5,
                 ) -> tuple[int, np.ndarray, list[FoundObject]]:
    """The first frame (of the first ``max_frames``) with at least one object, and its objects.

    Raises :class:`~fastsam2.prompts.proposals.NoProposalError` when none has one.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    searched = 0
    for idx, frame in enumerate(frames):
        if idx >= max_frames:
            break
        searched += 1
        found = objects_on_frame(frame, proposer, masker, settings)
        if found:
            return idx, frame, found
    if searched == 0:
        raise NoProposalError("no frames to search for a region proposal (empty video)")
    raise NoProposalError(
        f"no region proposal above {settings.threshold:g} objectness in the first {searched} frames"
    )


def found_to_prompts(found: Sequence[FoundObject], frame_idx: int, first_id: int, text: str | None = None,
                     source: str = "auto") -> list[ObjectPrompt]:
    """Object prompts (ids ``first_id``, ``first_id + 1``, ...) for objects found on ``frame_idx``."""
    return [ObjectPrompt(obj_id=first_id + i, point=list(f.point), box=list(f.box), frame_idx=frame_idx,
                         objectness=f.objectness, text=text, source=source)
            for i, f in enumerate(found)]


def grounded_prompts(picked: Sequence[Grounded], frame_idx: int, first_id: int, text: str) -> list[ObjectPrompt]:
    """Object prompts of the objects a phrase selected (:mod:`fastsam2.prompts.grounding`): source
    ``text``, the phrase their text, their CLIP score."""
    prompts = found_to_prompts([g.obj for g in picked], frame_idx, first_id, text, source="text")
    for obj, g in zip(prompts, picked):
        obj.clip_score = g.clip_score
    return prompts


def apply_captions(objects: Sequence[ObjectPrompt], captions: Sequence[str]) -> None:
    """Each object's caption, refined to its own phrase (its router text, at most 6 words)."""
    for obj, caption in zip(objects, captions):
        obj.caption = caption
        obj.text = refine_caption(caption)


class NewObjectDetector:
    """Finds objects that enter mid-video, for :meth:`StreamingTracker.track`'s ``detector``.

    A proposal whose coarse mask overlaps every tracked object's current mask
    by less than ``new_object_iou`` is new; each new object gets its own click
    and, with a captioner (one batched call per detection frame), its own
    caption and phrase. Per video, :meth:`for_video` binds the video's text (a
    user phrase wins over captions) and caption provenance.

    ``settings.max_objects`` caps the objects of a video in total (first-frame
    objects and late ones): each tracked object costs memory attention, decoder
    and memory encoder on every later frame and its own memory bank, lost or
    not, so an uncapped long video would grow without bound. New candidates only
    fill the free slots, best first; the ones left out are logged, and once the
    video is full no detection runs (no proposals, no coarse masks).

    In a text run (the video's objects selected by a phrase, source ``text``)
    the phrase selects the new objects too, by the first frame's rule
    (:mod:`fastsam2.prompts.grounding`): candidates whose crop scores CLIP
    region-text similarity at ``text_threshold`` or more, best score first,
    source ``text`` with their ``clip_score``. ``text_scorer`` returns the
    scorer and is called only when a text run has candidates, so CLIP is
    loaded only where a phrase selects.
    """

    def __init__(self, proposer: Proposer, masker: CoarseMasker, settings: MultiObjectSettings = MultiObjectSettings(),
                 new_object_iou: float = 0.1, captioner: Captioner | None = None,
                 text_scorer: Callable[[], RegionTextScorer] | None = None,
                 text_threshold: float | None = None) -> None:
        self.proposer = proposer
        self.masker = masker
        self.settings = settings
        self.new_object_iou = new_object_iou
        self.captioner = captioner
        self.text_scorer = text_scorer
        self.text_threshold = text_threshold
        self.text: str | None = None
        self.select_by_text = False  # the video's objects were selected by ``text``
        self.video_id: str | None = None

    def for_video(self, task) -> "NewObjectDetector":
        """This detector with the video's user text (used as every new object's phrase) bound;
        in a text run the phrase also selects the new objects."""
        bound = copy.copy(self)  # the shared models and settings; the video's own fields below
        bound.video_id = task.video_id
        bound.text = task.text if task.prompt_source == "user" or not task.objects or not task.objects[0].caption else None
        bound.select_by_text = task.prompt_source == "text" and bool(task.text)
        if bound.select_by_text and (self.text_scorer is None or self.text_threshold is None):
            raise ValueError(f"the phrase {task.text!r} selects this video's objects by CLIP: "
                             "NewObjectDetector needs a text_scorer and a text_threshold")
        if self.captioner is not None and bound.text is None:
            task.caption_backend = task.caption_backend or self.captioner.backend
            task.caption_model = task.caption_model or self.captioner.model
        if len(task.objects) >= self.settings.max_objects:  # e.g. a manifest with more boxes than the cap
            log.warning("video %s starts with %d object(s), --max-objects %d: no objects that enter later "
                        "will be looked for", task.video_id, len(task.objects), self.settings.max_objects)
        return bound

    def __call__(self, frame_idx: int, rgb: np.ndarray, tracked: np.ndarray, next_id: int) -> list[ObjectPrompt]:
        free = self.settings.max_objects - len(tracked)
        if free <= 0:  # the video is full: no proposals, no coarse masks
            return []
        if self.select_by_text:
            prompts = self._grounded(frame_idx, rgb, tracked, next_id)
        else:  # one more than the free slots: enough to know whether the cap left one out
            wanted = dataclasses.replace(self.settings, max_objects=free + 1)
            found = objects_on_frame(rgb, self.proposer, self.masker, wanted,
                                     exclude=list(tracked), exclude_iou=self.new_object_iou)
            prompts = found_to_prompts(found, frame_idx, next_id, self.text)
        if len(prompts) > free:
            left = prompts[free:]
            log.warning("video %s, frame %d: %s new object(s) not tracked, --max-objects %d reached "
                        "(best left out: objectness %.3f%s)", self.video_id, frame_idx,
                        len(left) if self.select_by_text else "at least 1 more", self.settings.max_objects,
                        left[0].objectness,
                        "" if left[0].clip_score is None else f", CLIP score {left[0].clip_score:.3f}")
            prompts = prompts[:free]
        if prompts and self.captioner is not None and self.text is None:
            apply_captions(prompts, self.captioner.caption([rgb] * len(prompts), [o.box for o in prompts]))
        return prompts

    def _grounded(self, frame_idx: int, rgb: np.ndarray, tracked: np.ndarray, next_id: int) -> list[ObjectPrompt]:
        """New objects the phrase selects, best CLIP score first (the first frame's rule; none is no error)."""
        from fastsam2.prompts.grounding import candidate_settings, matching, rank_by_text  # torch, PIL: on use

        found = objects_on_frame(rgb, self.proposer, self.masker, candidate_settings(self.settings),
                                 exclude=list(tracked), exclude_iou=self.new_object_iou)
        if not found:  # CLIP is loaded only when a phrase has something to select
            return []
        ranked = rank_by_text(rgb, found, self.text, self.text_scorer())
        return grounded_prompts(matching(ranked, self.text_threshold, len(ranked)), frame_idx, next_id, self.text)
