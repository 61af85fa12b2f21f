"""Which class-agnostic proposals may become auto-prompt boxes.

The detector (:class:`fastsam2.models.detector.ProposalModel`) ranks boxes by
objectness; here we drop the boxes that make bad prompts (specks, and boxes that
are nearly the whole frame, which the RPN scores highly on clutter and which
tell SAM2 nothing). :func:`fastsam2.prompts.multi.find_objects` walks the first
frames until one has objects, since objects often enter a few frames in.
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
    """What :func:`~fastsam2.prompts.multi.find_objects` needs from a detector (``ProposalModel`` is one)."""

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
