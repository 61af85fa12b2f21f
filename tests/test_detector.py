"""The RPN proposer with real torchvision classes and random weights (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsam2.models.detector import RANDOM_ARCH, Proposal, ProposalModel
from fastsam2.models.factory import load_detector
from fastsam2.models.weights import WeightsUnavailable, torchvision_cache_path


@pytest.fixture(scope="module")
def proposer() -> ProposalModel:
    return ProposalModel(load_detector(weights=None, device="cpu"))


def _frame(h: int = 180, w: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    frame[40:120, 60:150] = (220, 180, 40)  # a bright block for the RPN to look at
    return frame


def test_random_weights_are_said(proposer, caplog):
    assert proposer.random_weights
    assert proposer.arch == RANDOM_ARCH
    assert proposer.name.endswith("+random")


def test_proposals_are_boxes_in_the_frame_with_objectness(proposer):
    frame = _frame()
    props = proposer.propose(frame)
    assert props and all(isinstance(p, Proposal) for p in props)
    boxes = np.array([p.box for p in props])
    scores = np.array([p.score for p in props])
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= frame.shape[1]).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= frame.shape[0]).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (np.diff(scores) <= 0).all(), "best objectness first"
    # The BatchNorm calibration keeps random objectness away from a flat 0.5.
    assert scores.max() - scores.min() > 0.05


def test_batch_matches_single_and_is_deterministic(proposer):
    a, b = _frame(seed=1), _frame(seed=2)
    single = proposer.propose(a)
    batch = proposer.propose_batch([a, b])
    assert len(batch) == 2
    np.testing.assert_allclose([p.score for p in batch[0][:20]], [p.score for p in single[:20]], atol=1e-5)
    again = ProposalModel(load_detector(weights=None, device="cpu")).propose(a)
    assert [p.box for p in again[:10]] == [p.box for p in single[:10]]


def test_weights_from_a_local_file(proposer, tmp_path):
    path = tmp_path / "detector.pt"
    torch.save({"model": proposer.model.state_dict()}, path)
    loaded = ProposalModel(load_detector(weights=str(path), arch=RANDOM_ARCH, device="cpu"))
    assert not loaded.random_weights
    frame = _frame(seed=3)
    assert [p.box for p in loaded.propose(frame)[:5]] == [p.box for p in proposer.propose(frame)[:5]]


def test_missing_weights_name_their_cause(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert str(torchvision_cache_path(RANDOM_ARCH)).startswith(str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="not in torchvision's cache"):
        ProposalModel(load_detector(weights="default", arch=RANDOM_ARCH, device="cpu"))
    with pytest.raises(WeightsUnavailable, match="not found"):
        ProposalModel(load_detector(weights=str(tmp_path / "nope.pt"), arch=RANDOM_ARCH, device="cpu"))
    with pytest.raises(ValueError, match="unknown detector"):
        ProposalModel(load_detector(weights=None, arch="yolo", device="cpu"))
