"""Several objects per video: proposals -> distinct objects, per-object text, objects that enter later.

SAM2 runs with random weights at 256 px (no trained weights here). Where a test
needs proposals that hit the synthetic shapes, the proposer is
:class:`fastsam2.synthetic.GroundTruthProposer`, a named test double.
"""

from __future__ import annotations


import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from fastsam2.config import JobConfig
from fastsam2.labeling import label_video
from fastsam2.models.detector import Proposal
from fastsam2.models.factory import load_sam2
from fastsam2.models.sam2 import STOCK_PREDICTOR
from fastsam2.output import write_video
from fastsam2.prompts.click import CoarseMasker
from fastsam2.prompts.multi import (
    MultiObjectSettings,
    NewObjectDetector,
    box_nms,
    find_objects,
    found_to_prompts,
    mask_iou,
    objects_on_frame,
)
from fastsam2.schema import table_from_rows
from fastsam2.sources import discover
from fastsam2.synthetic import GroundTruthProposer, three_shapes_and_a_late_one, write_frames
from fastsam2.tracking.factory import build_tracker, load_tracker_sam2
from fastsam2.tracking.pruned_predictor import OBJECT_TEXT_KEY, PREDICTOR_TARGET, STATS_KEY


NUM_FRAMES = 8  # the fourth shape appears at frame 6; frame 7 follows it


@pytest.fixture(scope="module")
def video():
    return three_shapes_and_a_late_one(num_frames=NUM_FRAMES)


@pytest.fixture(scope="module")
def masker():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return CoarseMasker(config_name="sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True)


class JitteredDuplicates:
    """Wraps a proposer and adds, per box, a shifted copy with lower objectness (what an RPN does)."""

    def __init__(self, inner):
        self.inner = inner

    def propose(self, frame):
        out = []
        for p in self.inner.propose(frame):
            x0, y0, x1, y1 = p.box
            out += [p, Proposal((x0 + 2, y0 + 1, x1 + 2, y1 + 1), p.score - 0.1)]
        return out


def test_distinct_objects_from_overlapping_proposals(video, masker):
    frame = video.frames[6]
    found = objects_on_frame(frame, JitteredDuplicates(GroundTruthProposer(video)), masker, MultiObjectSettings())
    truth = GroundTruthProposer(video).propose(frame)
    assert len(found) == len(truth) == 4  # the duplicates count once
    assert sorted(f.box for f in found) == sorted(p.box for p in truth)
    for f in found:
        x0, y0, x1, y1 = f.box
        assert x0 <= f.point[0] <= x1 and y0 <= f.point[1] <= y1  # each object its own click, in its box
    assert len(objects_on_frame(frame, GroundTruthProposer(video), masker, MultiObjectSettings(max_objects=2))) == 2
    # Above the objectness threshold only.
    assert objects_on_frame(frame, GroundTruthProposer(video), masker, MultiObjectSettings(threshold=0.995)) == []


class GroundTruthMasker:
    """TEST DOUBLE for a trained SAM2's coarse mask: the synthetic shape with most pixels in the box."""

    def __init__(self, video):
        self.truth = GroundTruthProposer(video)

    def masks(self, frame, boxes):
        video = self.truth.video
        label = video.masks[int(np.argmin([np.abs(f.astype(int) - frame.astype(int)).mean() for f in video.frames]))]
        out = []
        for x0, y0, x1, y1 in boxes:
            inside = label[int(y0):int(y1), int(x0):int(x1)]
            ids, counts = np.unique(inside[inside > 0], return_counts=True)
            out.append(label == ids[np.argmax(counts)] if len(ids) else np.zeros_like(label, bool))
        return out


def test_boxes_that_escape_nms_but_share_a_mask_count_once(video):
    """A loose box around a shape (box IoU < 0.5 with the tight one) survives NMS; the mask IoU merges it."""

    class LooseBoxes:
        def propose(self, frame):
            out = []
            for p in GroundTruthProposer(video).propose(frame):
                x0, y0, x1, y1 = p.box
                w, h = x1 - x0, y1 - y0
                out += [p, Proposal((x0 - 0.3 * w, y0 - 0.3 * h, x1 + 0.3 * w, y1 + 0.3 * h), p.score - 0.2)]
            return out

    masker = GroundTruthMasker(video)
    frame = video.frames[0]
    assert len(objects_on_frame(frame, LooseBoxes(), masker, MultiObjectSettings())) == 3
    no_dedup = MultiObjectSettings(dedup_mask_iou=1.01, max_objects=10)
    assert len(objects_on_frame(frame, LooseBoxes(), masker, no_dedup)) > 3


def test_nms_and_mask_iou():
    assert box_nms([(0, 0, 10, 10), (1, 1, 11, 11), (20, 20, 30, 30)], [0.9, 0.8, 0.7], 0.5) == [0, 2]
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0


def test_only_objects_overlapping_no_tracked_mask_are_new(video, masker):
    frame = video.frames[6]
    tracked = np.stack([video.masks[6] == k for k in (1, 2, 3)])
    det = NewObjectDetector(GroundTruthProposer(video), masker, MultiObjectSettings(), new_object_iou=0.1)
    new = det(6, frame, tracked, next_id=4)
    assert [o.obj_id for o in new] == [4]
    ys, xs = np.nonzero(video.masks[6] == 4)
    assert new[0].box == [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    assert new[0].frame_idx == 6 and new[0].source == "auto"


def _three_prompts(video, masker):
    idx, _, found = find_objects(iter(video.frames), GroundTruthProposer(video), masker, MultiObjectSettings(max_objects=3))
    assert idx == 0 and len(found) == 3
    return found_to_prompts(found, idx, first_id=1)


@pytest.mark.slow
def test_keep_one_with_three_objects_is_stock_sam2(video, masker, tmp_path):
    """Three auto prompts, each with its own phrase: masks and memory equal stock SAM2's bit for bit."""
    short = three_shapes_and_a_late_one(num_frames=4)
    prompts = _three_prompts(short, masker)
    write_frames(short, tmp_path)
    folder = str(tmp_path / "JPEGImages" / "480p" / short.name)

    def run(target, texts):
        pred = load_sam2("sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True,
                                     predictor_target=target).model
        state = pred.init_state(folder)
        for o in prompts:
            if texts:
                pred.set_object_text(state, o.obj_id, f"object number {o.obj_id}")
            pred.add_new_points_or_box(state, 0, o.obj_id, points=np.array([o.point], np.float32),
                                       labels=np.array([1], np.int32), box=np.array(o.box, np.float32))
        masks = {f: m.clone() for f, _, m in pred.propagate_in_video(state)}
        return state, masks

    stock_state, stock = run(STOCK_PREDICTOR, texts=False)
    ours_state, ours = run(PREDICTOR_TARGET, texts=True)
    assert ours_state[OBJECT_TEXT_KEY] == {1: "object number 1", 2: "object number 2", 3: "object number 3"}
    assert stock.keys() == ours.keys() == set(range(4))
    for f in stock:
        assert stock[f].shape[0] == 3
        assert torch.equal(stock[f], ours[f]), f"masks differ on frame {f}"
    for obj_idx in range(3):
        a, b = stock_state["output_dict_per_obj"][obj_idx], ours_state["output_dict_per_obj"][obj_idx]
        for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            assert a[key].keys() == b[key].keys()
            for t in a[key]:
                assert torch.equal(a[key][t]["maskmem_features"], b[key][t]["maskmem_features"]), (obj_idx, t)
                assert torch.equal(a[key][t]["obj_ptr"], b[key][t]["obj_ptr"]), (obj_idx, t)
    # The image encoder ran once per frame, however many objects.
    assert {f: s["encoder_calls"] for f, s in ours_state[STATS_KEY].items()} == {f: 1 for f in range(4)}


def test_each_object_routes_on_its_own_phrase(video, masker):
    """Pruned (keep 0.5, tiny random CLIP): the router scores each object against its own phrase,
    objects without one against the video's."""
    from fastsam2.tracking.router import build_router

    pred = load_sam2("sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True,
                                 predictor_target=PREDICTOR_TARGET).model
    router = build_router("clip", "none", clip_model="fastsam2-tiny", clip_random_weights=True)
    pred.configure_pruning(keep_ratio=0.5, router=router)
    seen: list[tuple[int, str]] = []
    real = router.semantic_map

    def spy(cache, frame_idx, obj_key, tokens, text, *args):  # records, then runs the real router
        seen.append((obj_key, text))
        return real(cache, frame_idx, obj_key, tokens, text, *args)

    router.semantic_map = spy
    short = three_shapes_and_a_late_one(num_frames=3)
    from fastsam2.tracking.streaming import StreamingTracker

    prompts = [o.model_copy(update={"text": t}) for o, t in zip(_three_prompts(short, masker)[:2], ["red disc", None])]
    results = list(StreamingTracker(pred).track(iter(short.frames), 3, 96, 128, prompts, text="video phrase"))
    assert len(results) == 3 and results[1].stats["tokens_kept"] < results[1].stats["tokens_total"]
    assert set(seen) == {(0, "red disc"), (1, "video phrase")}


@pytest.mark.slow  # ~2 min each on 2 shared CPU cores
@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
def test_late_object_starts_on_its_own_frame(video, masker, tmp_path, bidirectional):
    """Three objects from frame 0; the fourth (appearing at frame 6) is found by --detect-every 3;
    with --bidirectional it is also tracked back to frame 0."""
    write_frames(video, tmp_path)
    task = discover([str(tmp_path / "JPEGImages" / "480p" / video.name)])[0]
    task.prompt_source = "auto"
    task.objects = _three_prompts(video, masker)
    cfg = JobConfig(inputs=["x"], output=str(tmp_path / "out"), model={"random_weights": True, "image_size": 128, "device": "cpu"},
                    pruning={"keep_ratio": 1.0}, prompts={"detect_every": 3, "bidirectional": bidirectional})
    sam2 = load_tracker_sam2(cfg)
    tracker = build_tracker(cfg, sam2)
    # Test double: the RPN's trained weights are not here, and random SAM2 masks cannot tell old
    # objects from new; this proposer reports only the shape that enters (what exclusion leaves).
    det = NewObjectDetector(GroundTruthProposer(video, only={4}), CoarseMasker(sam2), MultiObjectSettings())
    res = label_video(task, tracker, cfg, detector=det.for_video(task))

    frames_of = {}
    for row in res.masks:
        frames_of.setdefault(row["obj_id"], []).append(row["frame_idx"])
    every = list(range(NUM_FRAMES))
    assert frames_of == {1: every, 2: every, 3: every, 4: every if bidirectional else [6, 7]}
    # One image-encoder run per frame for all objects; the reverse pass encodes frames 0..6 again.
    assert [f["encoder_calls"] for f in res.frames] == [2 if bidirectional and f < 7 else 1 for f in every]
    assert res.video["num_objects"] == 4 == len(res.objects)
    late = [o for o in res.objects if o["obj_id"] == 4][0]
    assert late["prompt_frame_idx"] == 6 and late["prompt_source"] == "auto"
    assert late["first_frame_idx"] == (0 if bidirectional else 6)
    assert [o["first_frame_idx"] for o in res.objects[:3]] == [0, 0, 0]

    # objects/ goes through the same writer; a later failure removes it with the other rows.
    root = str(tmp_path / "out")
    tables = {name: table_from_rows(name, rows) for name, rows in
              (("masks", res.masks), ("frames", res.frames), ("objects", res.objects), ("videos", [res.video]))}
    write_video(root, task.video_id, tables)
    objects = pq.read_table(f"{root}/objects/{task.video_id}.parquet").to_pylist()
    masks = pq.read_table(f"{root}/masks/{task.video_id}.parquet")
    assert {o["obj_id"] for o in objects} == set(masks.column("obj_id").to_pylist())
    err = table_from_rows("errors", [{"video_id": task.video_id, "stage": "track"}])
    write_video(root, task.video_id, {"errors": err})
    import os
    assert not os.path.exists(f"{root}/objects/{task.video_id}.parquet")


# --- Limits of late detection: --max-objects caps a video's objects; a phrase selects late objects too ---

CROWD_FRAMES = 4  # two shapes from frame 0, three more enter at frame 2 (the only detection frame)
LATE = {3: 0.7, 4: 0.95, 5: 0.85}  # objectness the double gives each entering shape


@pytest.fixture(scope="module")
def crowd():
    from fastsam2.synthetic import make_video

    return make_video("crowd", num_frames=CROWD_FRAMES, height=96, width=128, num_objects=5, seed=1,
                      appear_at={k: 2 for k in LATE})


class ObjectnessByShape:
    """The ground-truth proposer (test double) reporting only ``scores``' shapes, each with its own
    objectness (the double's own is 0.99 for all), and counting its calls."""

    def __init__(self, video, scores: dict[int, float]):
        self.inner = GroundTruthProposer(video, only=set(scores))
        self.scores = scores
        self.calls = 0

    def propose(self, frame):
        self.calls += 1
        props = self.inner.propose(frame)
        if not props:
            return []
        assert len(props) == len(self.scores), "every shape of the double must be on the detection frame"
        return [Proposal(p.box, self.scores[k]) for p, k in zip(props, sorted(self.scores))]


def _box_of(video, frame_idx, label):
    ys, xs = np.nonzero(video.masks[frame_idx] == label)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_late_objects_fill_only_the_free_slots(crowd, caplog):
    """--max-objects caps the video's objects in total: new ones fill the free slots, best objectness
    first, the rest are logged; a full video runs no detection at all."""
    proposer = ObjectnessByShape(crowd, LATE)
    det = NewObjectDetector(proposer, GroundTruthMasker(crowd), MultiObjectSettings(max_objects=3))
    tracked = np.stack([crowd.masks[2] == k for k in (1, 2)])
    with caplog.at_level("WARNING", logger="fastsam2.prompts.multi"):
        new = det(2, crowd.frames[2], tracked, next_id=3)
    assert [o.box for o in new] == [_box_of(crowd, 2, 4)] and new[0].objectness == pytest.approx(0.95)
    assert "at least 1 more new object(s) not tracked, --max-objects 3 reached" in caplog.text
    assert "objectness 0.850" in caplog.text  # the best one left out
    full = np.concatenate([tracked, (crowd.masks[2] == 4)[None]])
    assert det(2, crowd.frames[2], full, next_id=4) == [] and proposer.calls == 1  # no proposals once full
    # With room for all, all three come, best objectness first.
    roomy = NewObjectDetector(ObjectnessByShape(crowd, LATE), GroundTruthMasker(crowd), MultiObjectSettings(max_objects=5))
    assert [o.objectness for o in roomy(2, crowd.frames[2], tracked, next_id=3)] == pytest.approx([0.95, 0.85, 0.7])


def test_user_prompts_over_the_cap_are_all_kept_and_said_so(crowd, caplog):
    """A manifest with as many objects as --max-objects: none is dropped, no later object is looked
    for, and a warning says so (was silent)."""
    from fastsam2.config import ObjectPrompt, VideoTask

    proposer = ObjectnessByShape(crowd, LATE)
    det = NewObjectDetector(proposer, GroundTruthMasker(crowd), MultiObjectSettings(max_objects=2))
    task = VideoTask(video_id="crowd", uri="x", prompt_source="user",
                     objects=[ObjectPrompt(obj_id=k, point=[1.0, 1.0]) for k in (1, 2)])
    with caplog.at_level("WARNING", logger="fastsam2.prompts.multi"):
        bound = det.for_video(task)
    assert "video crowd starts with 2 object(s), --max-objects 2: no objects that enter later" in caplog.text
    assert len(task.objects) == 2
    assert bound(2, crowd.frames[2], np.stack([crowd.masks[2] == k for k in (1, 2)]), next_id=3) == []
    assert proposer.calls == 0


def test_late_text_selection_loads_clip_only_for_candidates(crowd):
    """In a text run the scorer is asked for only when a detection frame has new candidates; the
    phrase then picks them by the first frame's rule (here: threshold -1, every candidate matches)."""
    from fastsam2.config import VideoTask
    from fastsam2.models.factory import load_clip
    from fastsam2.prompts.grounding import RegionTextScorer

    loads = []

    def scorer():
        loads.append(1)
        return RegionTextScorer(load_clip("fastsam2-tiny", None, random_weights=True))

    det = NewObjectDetector(ObjectnessByShape(crowd, LATE), GroundTruthMasker(crowd), MultiObjectSettings(),
                            text_scorer=scorer, text_threshold=-1.0)
    task = VideoTask(video_id="crowd", uri="x", prompt_source="text", text="a red disc")
    bound = det.for_video(task)
    tracked = np.stack([crowd.masks[1] == k for k in (1, 2)])
    assert bound(1, crowd.frames[1], tracked, next_id=3) == [] and loads == []  # nothing entered yet
    new = bound(2, crowd.frames[2], tracked, next_id=3)
    assert loads == [1] and len(new) == 3
    assert all(o.source == "text" and o.text == "a red disc" and o.clip_score is not None for o in new)
    assert [o.clip_score for o in new] == sorted((o.clip_score for o in new), reverse=True)
    # Without a phrase (an auto run) no scorer is asked for.
    auto = det.for_video(VideoTask(video_id="crowd", uri="x", prompt_source="auto"))
    assert len(auto(2, crowd.frames[2], tracked, next_id=3)) == 3 and loads == [1]


def _crowd_task(crowd, tmp_path, text=None):
    """The crowd video as JPEG frames, its two first-frame shapes as prompts (by the ground truth)."""
    write_frames(crowd, tmp_path / "d")
    task = discover([str(tmp_path / "d" / "JPEGImages" / "480p" / crowd.name)])[0]
    _, _, found = find_objects(iter(crowd.frames), GroundTruthProposer(crowd), GroundTruthMasker(crowd),
                               MultiObjectSettings())
    assert len(found) == 2
    task.prompt_source = "text" if text else "auto"
    task.text = text
    task.objects = found_to_prompts(found, 0, 1, text, source=task.prompt_source)
    return task


def _crowd_config(tmp_path, **prompts) -> JobConfig:
    return JobConfig(inputs=["x"], output=str(tmp_path / "o"), model={"random_weights": True, "image_size": 128, "device": "cpu"},
                     pruning={"keep_ratio": 1.0, "clip_model": "fastsam2-tiny"},
                     prompts={"detect_every": 2, "caption_backend": "none", **prompts})


def _track_stage(crowd, cfg: JobConfig):
    """The real track actor (random SAM2, random RPN built), its late-object proposer and coarse
    masker then replaced by the ground-truth test doubles (no trained weights here)."""
    from fastsam2.stages import TrackStage

    stage = TrackStage(cfg.model_dump_json())
    stage.detector.proposer = ObjectnessByShape(crowd, LATE)
    stage.detector.masker = GroundTruthMasker(crowd)
    return stage


def _tracked(stage, task):
    """Run the track actor on one video; its tables as rows."""
    from fastsam2.output import from_ipc
    from fastsam2.stages import _rows

    out = stage(_rows([task]))
    return {name: from_ipc(data).to_pylist() for name, data in out["payload"][0].items() if data is not None}


def test_more_late_objects_than_the_cap_allows(crowd, tmp_path):
    """Through the track actor: 2 objects + 3 entering, --max-objects 4 -> exactly 4 objects, the late
    two the best by objectness; no CLIP loaded (no phrase)."""
    task = _crowd_task(crowd, tmp_path)
    stage = _track_stage(crowd, _crowd_config(tmp_path, max_objects=4))
    tables = _tracked(stage, task)
    assert "errors" not in tables, tables.get("errors")
    objects = tables["objects"]
    assert tables["videos"][0]["num_objects"] == 4 == len(objects)
    late = [o for o in objects if o["prompt_frame_idx"] == 2]
    assert [o["obj_id"] for o in late] == [3, 4]
    assert [o["box"] for o in late] == [_box_of(crowd, 2, 4), _box_of(crowd, 2, 5)]
    assert [o["objectness"] for o in late] == pytest.approx([0.95, 0.85])
    assert {m["obj_id"] for m in tables["masks"]} == {1, 2, 3, 4}
    assert not stage._text_scorer.loaded


def test_a_phrase_selects_late_objects_too(crowd, tmp_path):
    """Text run through the track actor (tiny random CLIP, so scores are arbitrary but fixed): the
    threshold is set between the late shapes' best and second CLIP scores, so exactly one of the three
    matches; it is added with source 'text' and its score, the others are not, though slots are free."""
    from fastsam2.sources import FrameReader
    from fastsam2.stages import LazyTextScorer

    task = _crowd_task(crowd, tmp_path, text="a red disc")
    cfg = _crowd_config(tmp_path, max_objects=5)
    # The scores the actor will see: the same (seeded) CLIP, the decoded detection frame, the shapes' boxes.
    scorer = LazyTextScorer(cfg)()
    decoded = list(FrameReader(task))[2]
    scores = dict(zip(sorted(LATE), scorer.scores(decoded, [_box_of(crowd, 2, k) for k in sorted(LATE)], task.text)))
    ranked = sorted(scores, key=scores.get, reverse=True)
    assert scores[ranked[0]] > scores[ranked[1]]
    cfg.prompts.text_threshold = (scores[ranked[0]] + scores[ranked[1]]) / 2
    stage = _track_stage(crowd, cfg)
    assert not stage._text_scorer.loaded  # loaded when a phrase has candidates to select, not before
    tables = _tracked(stage, task)
    assert "errors" not in tables, tables.get("errors")
    late = [o for o in tables["objects"] if o["prompt_frame_idx"] == 2]
    assert len(late) == 1 and tables["videos"][0]["num_objects"] == 3
    assert late[0]["box"] == _box_of(crowd, 2, ranked[0])
    assert late[0]["prompt_source"] == "text" and late[0]["phrase"] == "a red disc"
    assert late[0]["clip_score"] == pytest.approx(scores[ranked[0]], abs=1e-5)


def test_late_text_selection_without_clip_fails_in_one_line(crowd, tmp_path):
    """A text run whose CLIP weights are missing: the video fails in the track stage with the same
    one-line named error as the propose stage (CLIP is loaded only when late candidates appear)."""
    task = _crowd_task(crowd, tmp_path, text="a red disc")
    stage = _track_stage(crowd, _crowd_config(tmp_path))
    # The scorer reads the job config when first called: weights that are not there.
    stage._text_scorer.cfg = stage.cfg.model_copy(update={
        "model": stage.cfg.model.model_copy(update={"random_weights": False}),
        "pruning": stage.cfg.pruning.model_copy(update={"clip_pretrained": str(tmp_path / "missing.bin")})})
    err = _tracked(stage, task)["errors"][0]
    assert err["stage"] == "track" and err["error_type"] == "ClipWeightsUnavailable"
    assert "\n" not in err["message"] and err["message"].startswith("--text selects objects by CLIP, which is unavailable")
