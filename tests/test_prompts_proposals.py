"""Box picking over proposals: filtering, thresholds, lazy frame reading, named errors."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam2.models.detector import Proposal
from fastsam2.prompts.proposals import BoxFilter, NoProposalError, filter_proposals, pick_box

H, W = 100, 200


class FakeProposer:
    """Per-frame canned proposals; counts the frames it saw."""

    def __init__(self, per_frame: list[list[Proposal]]):
        self.per_frame = per_frame
        self.calls = 0

    def propose(self, frame: np.ndarray) -> list[Proposal]:
        self.calls += 1
        return self.per_frame[int(frame[0, 0, 0])]


def frames(n: int, seen: list | None = None):
    for i in range(n):
        if seen is not None:
            seen.append(i)
        f = np.zeros((H, W, 3), np.uint8)
        f[0, 0, 0] = i
        yield f


def test_filter_drops_specks_and_whole_frame_boxes():
    props = [
        Proposal((0, 0, 200, 100), 0.99),  # the whole frame
        Proposal((1, 1, 199, 99), 0.98),  # nearly the whole frame
        Proposal((10, 10, 12, 12), 0.97),  # a speck
        Proposal((20, 20, 80, 70), 0.60),
        Proposal((100, 10, 150, 90), 0.90),
    ]
    kept = filter_proposals(props, H, W)
    assert [p.score for p in kept] == [0.90, 0.60]
    assert BoxFilter(max_area=1.0, max_side=1.01).keep((1, 1, 199, 99), H, W)


def test_pick_box_takes_the_best_usable_box_on_the_first_good_frame():
    proposer = FakeProposer(
        [
            [Proposal((0, 0, 200, 100), 0.99), Proposal((20, 20, 60, 60), 0.3)],  # nothing > 0.5
            [Proposal((20, 20, 60, 60), 0.7), Proposal((100, 20, 160, 80), 0.8)],
            [Proposal((20, 20, 60, 60), 0.95)],
        ]
    )
    seen: list[int] = []
    picked = pick_box(frames(3, seen), proposer, threshold=0.5)
    assert picked.frame_idx == 1
    assert picked.box == (100, 20, 160, 80) and picked.objectness == pytest.approx(0.8)
    assert picked.frame[0, 0, 0] == 1
    assert seen == [0, 1], "frames are read lazily"


def test_no_proposal_error_names_threshold_and_frames():
    proposer = FakeProposer([[Proposal((20, 20, 60, 60), 0.4)]] * 10)
    seen: list[int] = []
    with pytest.raises(NoProposalError, match=r"above 0.5 objectness in the first 5 frames") as err:
        pick_box(frames(10, seen), proposer, max_frames=5, threshold=0.5)
    assert err.value.stage == "proposals"
    assert proposer.calls == 5 and len(seen) <= 6
    with pytest.raises(NoProposalError, match="empty video"):
        pick_box(frames(0), proposer)
    with pytest.raises(NoProposalError, match="first 2 frames"):
        pick_box(frames(2), proposer, max_frames=5)
