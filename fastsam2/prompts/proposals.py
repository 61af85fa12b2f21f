"""Pick the auto-prompt box: the best class-agnostic proposal in the first frames.

The detector (:class:`fastsam2.models.detector.ProposalModel`) ranks boxes by
objectness; here we drop the boxes that make bad prompts (specks, and boxes that
are nearly the whole frame, which the RPN scores highly on clutter and which
tell SAM2 nothing) and walk the first ``max_frames`` frames until one has a box
above the threshold, since objects often enter a few frames in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fastsam2.models.detector import Proposal

Box = tuple[float, float, float, float]


class NoProposalError(RuntimeError):
    """No usable region proposal in the frames searched; the video gets an error row."""

    stage = "proposals"


class Proposer(Protocol):
    """What :func:`pick_box` needs from a detector (``ProposalModel`` is one)."""

    def propose(self, frame: np.ndarray) -> list[Proposal]: ...


@dataclass(frozen=True)
class BoxFilter:
    """Which proposals may become a prompt, as fractions of the frame.

    ``min_area``: smaller boxes are specks (noise, or objects too small to
    track). ``max_area`` / ``max_side``: a box covering most of the frame, or
    spanning nearly all of both sides, is background, not an object.
    """

    min_area: float = 0.005
    max_area: float = 0.8
    max_side: float = 0.95

    def keep(self, box: Sequence[float], height: int, width: int) -> bool:
        x0, y0, x1, y1 = box
        w, h = max(0.0, x1 - x0), max(0.0, y1 - y0)
        area = (w * h) / float(height * width)
        if area < self.min_area or area > self.max_area:
            return False
        return not (w >= self.max_side * width and h >= self.max_side * height)


def filter_proposals(
    proposals: Iterable[Proposal], height: int, width: int, box_filter: BoxFilter = BoxFilter()
) -> list[Proposal]:
    """The proposals that pass ``box_filter``, best objectness first."""
    kept = [p for p in proposals if box_filter.keep(p.box, height, width)]
    return sorted(kept, key=lambda p: -p.score)


def box_contains(box: Sequence[float], point: Sequence[float]) -> bool:
    """Whether ``point`` (x, y) lies in ``box`` (x0, y0, x1, y1), borders included."""
    x, y = point
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


@dataclass(frozen=True)
class PickedBox:
    """The chosen proposal and the frame it was found on."""

    frame_idx: int
    frame: np.ndarray
    box: Box
    objectness: float


def pick_box(
    frames: Iterable[np.ndarray],
    proposer: Proposer,
    *,
    max_frames: int = 5,
    threshold: float = 0.5,
    box_filter: BoxFilter = BoxFilter(),
) -> PickedBox:
    """The highest-objectness usable box on the first frame that has one above ``threshold``.

    Frames are read lazily, at most ``max_frames`` of them. Raises
    :class:`NoProposalError` naming the threshold and frame count when none qualifies.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    searched = 0
    best_seen = 0.0
    for idx, frame in enumerate(frames):
        if idx >= max_frames:
            break
        searched += 1
        h, w = frame.shape[:2]
        kept = filter_proposals(proposer.propose(frame), h, w, box_filter)
        if kept:
            best_seen = max(best_seen, kept[0].score)
            if kept[0].score > threshold:
                return PickedBox(idx, frame, tuple(kept[0].box), float(kept[0].score))
    if searched == 0:
        raise NoProposalError("no frames to search for a region proposal (empty video)")
    raise NoProposalError(
        f"no region proposal above {threshold:g} objectness in the first {searched} frames "
        f"(best usable: {best_seen:.3f})"
    )
