"""The auto-prompt chain: user overrides (with fakes), then real random models on DAVIS frames."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam2.models.detector import Proposal
from fastsam2.prompts.auto import AutoPrompt, make_auto_prompt
from fastsam2.prompts.click import Click
from fastsam2.prompts.proposals import NoProposalError
from fastsam2.schema import table_from_rows

H, W = 120, 160


class FakeProposer:
    name, random_weights = "fake-rpn", False

    def __init__(self, props):
        self.props, self.calls = props, 0

    def propose(self, frame):
        self.calls += 1
        return list(self.props)


class FakeMasker:
    name, random_weights = "fake-sam2", True

    def __init__(self):
        self.calls = []

    def click(self, frame, box):
        self.calls.append(tuple(box))
        return Click(box[0] + 1, box[1] + 1, from_mask=True)


class FakeCaptioner:
    backend, model, random_weights = "fake", "fake-llava", False

    def __init__(self):
        self.calls = []

    def caption(self, images, boxes):
        self.calls.append(list(boxes))
        return ["The image shows a brown fluffy dog sitting on the grass."] * len(images)


def frames(n=8):
    return (np.full((H, W, 3), i, np.uint8) for i in range(n))


PROPS = [Proposal((10, 10, 60, 70), 0.9), Proposal((80, 20, 150, 100), 0.7)]


def test_everything_automatic():
    p, m, c = FakeProposer(PROPS), FakeMasker(), FakeCaptioner()
    ap = make_auto_prompt(frames(), proposer=p, masker=m, captioner=c)
    assert ap.box == (10, 10, 60, 70) and ap.objectness == pytest.approx(0.9)
    assert ap.point == (11, 11) and ap.point_from_mask
    assert ap.caption.startswith("The image shows") and ap.phrase == "brown fluffy dog"
    assert ap.prompt_source == "auto" and ap.sources == {"box": "auto", "point": "auto", "text": "auto"}
    assert (ap.detector_model, ap.mask_model, ap.caption_backend, ap.caption_model) == (
        "fake-rpn", "fake-sam2", "fake", "fake-llava")
    assert ap.random_weights == {"detector": False, "sam2_mask": True, "captioner": False}
    assert ap.any_random_weights
    # The row fits the videos/ schema.
    table = table_from_rows("videos", [{"video_id": "v", **ap.video_row()}])
    row = table.to_pylist()[0]
    assert row["text"] == "brown fluffy dog" and row["prompt_source"] == "auto"
    assert row["box"] == [10, 10, 60, 70] and row["caption_backend"] == "fake"


def test_user_values_override_their_steps():
    p, m, c = FakeProposer(PROPS), FakeMasker(), FakeCaptioner()
    ap = make_auto_prompt(frames(), proposer=p, masker=m, captioner=c, user_box=(1, 2, 30, 40),
                          user_point=(5, 6), user_text="red kite", user_frame_idx=3)
    assert (ap.box, ap.point, ap.phrase, ap.frame_idx) == ((1, 2, 30, 40), (5, 6), "red kite", 3)
    assert ap.caption is None and ap.objectness is None
    assert ap.prompt_source == "user" and not ap.random_weights
    assert p.calls == 0 and m.calls == [] and c.calls == []


def test_user_text_only_still_finds_box_and_click():
    p, m, c = FakeProposer(PROPS), FakeMasker(), FakeCaptioner()
    ap = make_auto_prompt(frames(), proposer=p, masker=m, captioner=c, user_text="dog")
    assert ap.prompt_source == "mixed" and ap.phrase == "dog" and ap.box == (10, 10, 60, 70)
    assert c.calls == []  # the user's text skips captioning


def test_user_point_picks_a_box_that_contains_it():
    p, c = FakeProposer(PROPS), FakeCaptioner()
    ap = make_auto_prompt(frames(), proposer=p, captioner=c, user_point=(100, 50), user_frame_idx=2)
    assert ap.box == (80, 20, 150, 100) and ap.frame_idx == 2 and ap.sources["box"] == "auto"
    ap = make_auto_prompt(frames(), proposer=p, captioner=c, user_point=(5, 115))
    assert ap.box is None and ap.sources["box"] == "none" and c.calls[-1] == [None]


def test_missing_models_and_proposals_are_named():
    with pytest.raises(ValueError, match="needs a proposer"):
        make_auto_prompt(frames())
    with pytest.raises(ValueError, match="needs a masker"):
        make_auto_prompt(frames(), proposer=FakeProposer(PROPS), user_text="x")
    with pytest.raises(NoProposalError, match="above 0.95 objectness in the first 5 frames"):
        make_auto_prompt(frames(), proposer=FakeProposer(PROPS), threshold=0.95)
    with pytest.raises(ValueError, match="past the end"):
        make_auto_prompt(frames(3), user_box=(0, 0, 5, 5), user_point=(1, 1), user_text="x", user_frame_idx=5)


# ------------------------------------------------- real models, random weights, DAVIS frames


@pytest.fixture(scope="module")
def models():
    from fastsam2.models.detector import ProposalModel
    from fastsam2.models.factory import load_detector
    from fastsam2.prompts.caption import make_captioner
    from fastsam2.prompts.click import CoarseMasker

    return (
        ProposalModel(load_detector(weights=None, device="cpu")),
        CoarseMasker(image_size=256, random_weights=True, device="cpu"),
        make_captioner("vllm", random_weights=True, device="cpu", max_new_tokens=12),
    )


def _davis_frames(seq_dir, n=5):
    from PIL import Image

    for path in sorted(seq_dir.glob("*.jpg"))[:n]:
        yield np.asarray(Image.open(path).convert("RGB"))


def test_auto_prompt_chain_on_davis(shared_data, models):
    proposer, masker, captioner = models
    root = shared_data / "davis2016-val" / "JPEGImages" / "480p"
    seqs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(seqs) == 4
    rows = []
    for seq in seqs:
        ap = make_auto_prompt(_davis_frames(seq), proposer=proposer, masker=masker, captioner=captioner)
        assert isinstance(ap, AutoPrompt)
        x0, y0, x1, y1 = ap.box
        assert 0 <= x0 < x1 <= 854 and 0 <= y0 < y1 <= 480
        assert 0.5 < ap.objectness <= 1
        assert x0 <= ap.point[0] <= x1 and y0 <= ap.point[1] <= y1, "the click lies in the box"
        assert isinstance(ap.caption, str) and ap.caption
        assert ap.phrase and len(ap.phrase.split()) <= 6
        assert ap.prompt_source == "auto"
        assert ap.random_weights == {"detector": True, "sam2_mask": True, "captioner": True}
        assert ap.caption_backend == "transformers" and ap.caption_model == "tiny-random-llava"
        rows.append({"video_id": seq.name, **ap.video_row()})
    table = table_from_rows("videos", rows)
    assert table.num_rows == 4 and table.column("caption").null_count == 0
