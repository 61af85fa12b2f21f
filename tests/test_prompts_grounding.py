"""Text-grounded selection: CLIP region-text scores pick the objects (tiny random CLIP: scores are
meaningless, so the tests check the selection rule and the failure, not what CLIP prefers)."""

from __future__ import annotations


import numpy as np
import pytest

from fastsam2.config import JobConfig
from fastsam2.models.factory import load_clip
from fastsam2.models.weights import ClipWeightsUnavailable
from fastsam2.prompts.grounding import NoMatchingObject, RegionTextScorer, select_by_text
from fastsam2.prompts.multi import FoundObject
from fastsam2.stages import LazyTextScorer, ProposeStage
from fastsam2.synthetic import three_shapes_and_a_late_one


@pytest.fixture(scope="module")
def scorer():
    return RegionTextScorer(load_clip("fastsam2-tiny", None, random_weights=True))


def _found(video, frame_idx):
    label = video.masks[frame_idx]
    out = []
    for k in sorted(int(v) for v in np.unique(label) if v):
        ys, xs = np.nonzero(label == k)
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        out.append(FoundObject(box, 0.9, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), True, label == k))
    return out


def test_objects_above_threshold_best_first(scorer):
    video = three_shapes_and_a_late_one(num_frames=1)
    frame, found = video.frames[0], _found(video, 0)
    scores = scorer.scores(frame, [f.box for f in found], "a red disc")
    assert len(scores) == 3 and all(-1.0 <= s <= 1.0 for s in scores)
    assert scores == scorer.scores(frame, [f.box for f in found], "a red disc")  # deterministic
    ranked = sorted(scores, reverse=True)
    picked = select_by_text(frame, found, "a red disc", scorer, threshold=-1.0, max_objects=2)
    assert [g.clip_score for g in picked] == ranked[:2]
    middle = (ranked[0] + ranked[1]) / 2
    assert [g.clip_score for g in select_by_text(frame, found, "a red disc", scorer, middle, 5)] == ranked[:1]
    with pytest.raises(NoMatchingObject, match=r"no proposed object matches 'a red disc' .*best of 3"):
        select_by_text(frame, found, "a red disc", scorer, threshold=1.01, max_objects=5)


def test_without_clip_weights_text_selection_fails_in_one_line(tmp_path, monkeypatch):
    cfg = JobConfig(inputs=["x"], output=str(tmp_path), pruning={"clip_pretrained": str(tmp_path / "missing.bin")})
    scorer = LazyTextScorer(cfg)
    with pytest.raises(ClipWeightsUnavailable) as err:
        scorer()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--text selects objects by CLIP, which is unavailable")
    import fastsam2.models.factory as factory

    tried = []
    monkeypatch.setattr(factory, "shared_clip", lambda *a, **k: tried.append(a))
    with pytest.raises(ClipWeightsUnavailable, match="^--text selects objects by CLIP, which is unavailable"):
        scorer()  # the next video: the same one line at once, no second load or download attempt
    assert tried == []


@pytest.mark.parametrize("threshold", [-1.0, 1.01], ids=["matches", "none-match"])
def test_propose_stage_with_text_selects_by_clip(tmp_path, threshold):
    """ProposeStage with --text: objects carry the phrase, source 'text' and their CLIP score, or the
    video fails at propose with a named error. Proposals come from the ground-truth test double."""
    from fastsam2.prompts.click import CoarseMasker
    from fastsam2.sources import discover
    from fastsam2.stages import _rows
    from fastsam2.synthetic import GroundTruthProposer, write_frames

    video = three_shapes_and_a_late_one(num_frames=2)
    write_frames(video, tmp_path / "d")
    task = discover([str(tmp_path / "d" / "JPEGImages" / "480p" / video.name)])[0]
    task.prompt_source, task.text = "auto", "a red disc"
    cfg = JobConfig(inputs=["x"], output=str(tmp_path / "o"), model={"random_weights": True, "image_size": 256},
                    pruning={"clip_model": "fastsam2-tiny"}, prompts={"max_objects": 2, "text_threshold": threshold})
    stage = ProposeStage.__new__(ProposeStage)  # models set by hand: the double instead of the RPN
    stage.cfg, stage._text_scorer = cfg, LazyTextScorer(cfg)
    stage.proposer = GroundTruthProposer(video)
    stage.masker = CoarseMasker(config_name="sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True)
    out = stage(_rows([task]))
    from fastsam2.config import VideoTask

    done = VideoTask.model_validate_json(str(out["task"][0]))
    if threshold < 0:
        assert done.error is None and done.prompt_source == "text"
        assert [o.obj_id for o in done.objects] == [1, 2]  # top --max-objects of the three shapes
        assert all(o.source == "text" and o.text == "a red disc" and o.clip_score is not None for o in done.objects)
        assert done.objects[0].clip_score >= done.objects[1].clip_score
    else:
        assert done.error["stage"] == "propose" and done.error["error_type"] == "NoMatchingObject"
