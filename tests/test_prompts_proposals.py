"""Which proposals may become prompts (frame search and named errors: test_prompts_auto.py)."""

from __future__ import annotations

from fastsam2.models.detector import Proposal
from fastsam2.prompts.proposals import BoxFilter, filter_proposals

H, W = 100, 200


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
