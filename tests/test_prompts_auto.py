"""The prompt library the stages are made of: propose_prompts (boxes, clicks) and caption_prompts
(captions, phrases), with test doubles for the models first, then real random models on DAVIS frames."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam2.config import JobConfig, VideoTask
from fastsam2.stage_specs import captions
from fastsam2.labeling import object_row
from fastsam2.models.detector import Proposal
from fastsam2.prompts.auto import caption_prompts, object_regions, propose_prompts
from fastsam2.prompts.caption import jpeg_to_array
from fastsam2.prompts.grounding import NoMatchingObject
from fastsam2.prompts.multi import MultiObjectSettings
from fastsam2.prompts.proposals import NoProposalError
from fastsam2.schema import table_from_rows

H, W = 100, 200


class FakeProposer:
    """TEST DOUBLE for the RPN: canned proposals per frame (the frame's number is its pixel [0, 0, 0])."""

    name, random_weights = "fake-rpn", False

    def __init__(self, per_frame: list[list[Proposal]]):
        self.per_frame, self.calls = per_frame, 0

    def propose(self, frame: np.ndarray) -> list[Proposal]:
        self.calls += 1
        return list(self.per_frame[min(int(frame[0, 0, 0]), len(self.per_frame) - 1)])


class BoxMasker:
    """TEST DOUBLE for SAM2's coarse mask: the filled box (trained weights are not available here)."""

    def masks(self, frame: np.ndarray, boxes) -> list[np.ndarray]:
        out = []
        for x0, y0, x1, y1 in boxes:
            m = np.zeros(frame.shape[:2], bool)
            m[int(y0):int(y1), int(x0):int(x1)] = True
            out.append(m)
        return out


class GreyCaptioner:
    """TEST DOUBLE for LLaVA: says whether each region's centre is light or dark; counts its batched calls."""

    backend, model, random_weights = "fake", "fake-llava", False

    def __init__(self):
        self.calls: list[int] = []

    def caption_regions(self, regions) -> list[str]:
        self.calls.append(len(regions))
        tone = ["light" if r[r.shape[0] // 2, r.shape[1] // 2].mean() > 150 else "dark" for r in regions]
        return [f"The image shows a {t} grey box on a table." for t in tone]


class CannedScorer:
    """TEST DOUBLE for CLIP region-text similarity: a score per box, keyed by the box's left edge."""

    def __init__(self, by_x0: dict[float, float]):
        self.by_x0 = by_x0

    def scores(self, frame, boxes, text) -> list[float]:
        return [self.by_x0[float(b[0])] for b in boxes]


def frames(n: int, seen: list | None = None):
    """Frame i: grey level 40 * (i + 1) left of x=100, 200 right of it; pixel [0, 0, 0] = i."""
    for i in range(n):
        if seen is not None:
            seen.append(i)
        f = np.full((H, W, 3), 40 * (i + 1), np.uint8)
        f[:, 100:] = 200
        f[0, 0, 0] = i
        yield f


LEFT, RIGHT = (20, 20, 80, 80), (120, 10, 190, 90)
TWO_OBJECTS = [Proposal(LEFT, 0.9), Proposal((22, 21, 81, 79), 0.85), Proposal(RIGHT, 0.7)]  # the 2nd repeats the 1st
CAPTIONING = JobConfig(inputs=["x"], output="o")  # a job that captions (transformers, the default)


def auto_task(vid="v", text=None) -> VideoTask:
    return VideoTask(video_id=vid, uri="unused://", prompt_source="auto", text=text)


def test_every_object_gets_a_box_click_caption_and_phrase():
    task = auto_task()
    frame = propose_prompts(task, frames(3), FakeProposer([TWO_OBJECTS]), BoxMasker())
    assert frame[0, 0, 0] == 0
    assert [o.box for o in task.objects] == [list(LEFT), list(RIGHT)], "the repeat counts once"
    assert [o.obj_id for o in task.objects] == [1, 2] and {o.source for o in task.objects} == {"auto"}
    assert [o.objectness for o in task.objects] == pytest.approx([0.9, 0.7]) and task.objectness == pytest.approx(0.9)
    for o in task.objects:
        x0, y0, x1, y1 = o.box
        assert x0 <= o.point[0] <= x1 and y0 <= o.point[1] <= y1, "each click lies in its own box"
    assert captions(CAPTIONING, task)
    no_captions = CAPTIONING.model_copy(update={"prompts": CAPTIONING.prompts.model_copy(update={"caption_backend": "none"})})
    assert not captions(no_captions, task), "a job that does not caption captions nothing"

    jpegs = object_regions(frame, task)
    captioner = GreyCaptioner()
    caption_prompts([task], [[jpeg_to_array(j) for j in jpegs]], captioner)
    assert captioner.calls == [2], "every object of the video in one batched call"
    left, right = task.objects
    assert left.caption != right.caption, "each object is captioned from its own crop"
    assert (left.text, right.text) == ("dark grey box", "light grey box"), "each its own phrase"
    assert (task.caption, task.text) == (left.caption, left.text)  # videos/ keeps the first object's
    assert (task.caption_backend, task.caption_model) == ("fake", "fake-llava")
    assert not captions(CAPTIONING, task)

    # The task is the provenance record: labeling builds the objects/ rows from it.
    cfg = JobConfig(inputs=["x"], output="o", model={"random_weights": True})
    rows = table_from_rows("objects", [object_row(task, o, cfg, None) for o in task.objects]).to_pylist()
    assert [(r["obj_id"], r["caption"], r["phrase"], r["prompt_source"]) for r in rows] == [
        (o.obj_id, o.caption, o.text, "auto") for o in task.objects]
    assert rows[1]["caption_backend"] == "fake" and rows[1]["box"] == list(RIGHT)


def test_the_first_frame_with_an_object_is_found_reading_frames_lazily():
    proposer = FakeProposer([
        [Proposal((0, 0, 200, 100), 0.99), Proposal(LEFT, 0.3)],  # the whole frame, then nothing above 0.5
        [Proposal(LEFT, 0.7), Proposal(RIGHT, 0.8)],
        [Proposal(LEFT, 0.95)],
    ])
    seen: list[int] = []
    task = auto_task()
    frame = propose_prompts(task, frames(3, seen), proposer, BoxMasker(), MultiObjectSettings(max_objects=1))
    assert frame[0, 0, 0] == 1 and task.objects[0].frame_idx == 1
    assert [o.box for o in task.objects] == [list(RIGHT)] and task.objectness == pytest.approx(0.8)
    assert seen == [0, 1], "frames are read lazily"


def test_no_proposal_error_names_threshold_and_frames():
    proposer = FakeProposer([[Proposal(LEFT, 0.4)]])
    seen: list[int] = []
    with pytest.raises(NoProposalError, match=r"above 0.5 objectness in the first 5 frames") as err:
        propose_prompts(auto_task(), frames(10, seen), proposer, BoxMasker(), max_frames=5)
    assert err.value.stage == "proposals"
    assert proposer.calls == 5 and len(seen) <= 6
    with pytest.raises(NoProposalError, match="empty video"):
        propose_prompts(auto_task(), frames(0), proposer, BoxMasker())
    with pytest.raises(NoProposalError, match="first 2 frames"):
        propose_prompts(auto_task(), frames(2), proposer, BoxMasker(), max_frames=5)


def test_a_phrase_picks_the_objects_by_clip_and_needs_no_caption():
    task = auto_task(text="a grey box")
    scorer = CannedScorer({20.0: 0.1, 120.0: 0.3})
    propose_prompts(task, frames(2), FakeProposer([TWO_OBJECTS]), BoxMasker(), text_scorer=lambda: scorer)
    assert [o.box for o in task.objects] == [list(RIGHT)], "only the crop that matches the phrase"
    (obj,) = task.objects
    assert (obj.source, obj.text, obj.clip_score) == ("text", "a grey box", pytest.approx(0.3))
    assert task.prompt_source == "text" and not captions(CAPTIONING, task)

    with pytest.raises(NoMatchingObject, match="best of 2: 0.300"):
        propose_prompts(auto_task(text="a grey box"), frames(2), FakeProposer([TWO_OBJECTS]), BoxMasker(),
                        text_scorer=lambda: scorer, text_threshold=0.5)
    with pytest.raises(ValueError, match="needs a text_scorer"):
        propose_prompts(auto_task(text="x"), frames(2), FakeProposer([TWO_OBJECTS]), BoxMasker())


def test_caption_prompts_batches_every_video_and_checks_regions_first():
    a, b = auto_task("a"), auto_task("b")
    propose_prompts(a, frames(1), FakeProposer([TWO_OBJECTS]), BoxMasker())
    propose_prompts(b, frames(1), FakeProposer([[Proposal(RIGHT, 0.9)]]), BoxMasker())
    grey = [np.full((8, 8, 3), v, np.uint8) for v in (40, 200, 100)]
    captioner = GreyCaptioner()
    with pytest.raises(ValueError, match="video b has 1 object"):
        caption_prompts([a, b], [grey[:2], grey[:2]], captioner)
    assert captioner.calls == [], "nothing is captioned when regions and objects do not line up"
    caption_prompts([a, b], [grey[:2], grey[2:]], captioner)
    assert captioner.calls == [3]
    assert [o.text for o in a.objects + b.objects] == ["dark grey box", "light grey box", "dark grey box"]


# ------------------------------------------------- real models, random weights, DAVIS frames


@pytest.fixture(scope="module")
def models():
    from fastsam2.models.detector import ProposalModel
    from fastsam2.models.factory import load_detector
    from fastsam2.prompts.captioners import make_captioner
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


def test_prompt_library_on_davis_with_random_models(shared_data, models):
    """RANDOM WEIGHTS (detector, SAM2, LLaVA): the boxes and captions are noise; the chain is real."""
    proposer, masker, captioner = models
    root = shared_data / "davis2016-val" / "JPEGImages" / "480p"
    seqs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(seqs) == 4
    tasks, regions = [], []
    for seq in seqs:
        task = auto_task(seq.name)
        frame = propose_prompts(task, _davis_frames(seq), proposer, masker, MultiObjectSettings(max_objects=2))
        assert 1 <= len(task.objects) <= 2
        for o in task.objects:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= 854 and 0 <= y0 < y1 <= 480 and 0.5 < o.objectness <= 1
            assert x0 <= o.point[0] <= x1 and y0 <= o.point[1] <= y1, "the click lies in the box"
        tasks.append(task)
        regions.append([jpeg_to_array(j) for j in object_regions(frame, task)])
    caption_prompts(tasks, regions, captioner)
    cfg = JobConfig(inputs=["x"], output="o", model={"random_weights": True})
    rows = [object_row(t, o, cfg, None) for t in tasks for o in t.objects]
    table = table_from_rows("objects", rows)
    assert table.num_rows == sum(len(t.objects) for t in tasks) and table.column("caption").null_count == 0
    assert all(r["phrase"] and len(r["phrase"].split()) <= 6 for r in rows)
    assert {(t.caption_backend, t.caption_model) for t in tasks} == {("transformers", "tiny-random-llava")}
