"""``fastsam2-batch export``: round trips of every format against the masks a run wrote.

Runs are written with the pipeline's own writer (real Parquet, real RLE) from
synthetic videos with exact masks, so no model is needed: what is tested is
the export, not the tracker.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils

from fastsam2 import rle
from fastsam2.cli import main
from fastsam2.export import ExportError, export_run
from fastsam2.output import write_video
from fastsam2.schema import table_from_rows
from fastsam2.synthetic import make_video

# video -> (frames, objects, prompt frame); "late" starts tracking at frame 2, so frames 0-1 have no rows.
VIDEOS = {"two-obj": (6, 2, 0), "late": (5, 1, 2)}


def write_fake_run(root: str, text: dict[str, str] | None = None, random_weights: bool = True) -> dict:
    """A run as the pipeline writes it; returns the truth: {video: {obj: {frame: bool mask}}}."""
    truth = {}
    for seed, (vid, (n, k, start)) in enumerate(VIDEOS.items()):
        video = make_video(vid, num_frames=n, height=48, width=64, num_objects=k, seed=seed)
        masks, per_obj = [], {}
        for t in range(start, n):
            for obj in range(1, k + 1):
                m = video.masks[t] == obj
                if vid == "two-obj" and obj == 2 and t == 3:
                    m = np.zeros_like(m)  # object 2 hidden on frame 3: an empty mask row
                counts, area, bbox = rle.encode(m)
                masks.append(dict(video_id=vid, obj_id=obj, frame_idx=t, height=48, width=64, rle=counts,
                                  area=area, bbox=bbox, score=0.9 if area else 0.0))
                per_obj.setdefault(obj, {})[t] = m
        truth[vid] = per_obj
        row = dict(video_id=vid, uri=f"/videos/{vid}.mp4", status="ok", num_frames=n, height=48, width=64,
                   num_objects=k, text=(text or {}).get(vid), random_weights=random_weights, run_id="r1")
        write_video(root, vid, {"masks": table_from_rows("masks", masks), "frames": table_from_rows("frames", []),
                                "videos": table_from_rows("videos", [row])})
    return truth


@pytest.fixture
def run(tmp_path):
    root = str(tmp_path / "run")
    return root, write_fake_run(root, text={"two-obj": "a red disc"})


def test_coco_video_round_trips_through_pycocotools(run, tmp_path):
    root, truth = run
    out = tmp_path / "coco.json"
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"two-obj/2": "square", "a red disc": "disc"}))
    r = CliRunner().invoke(main, ["export", root, "--format", "coco-video", "-o", str(out), "--category-map", str(cmap),
                                  "--frame-ext", "png"])
    assert r.exit_code == 0, r.output
    assert "RANDOM WEIGHTS" in r.output and "2 video(s), 3 object(s)" in r.output
    doc = json.loads(out.read_text())
    videos = {v["id"]: v for v in doc["videos"]}
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    assert {v["name"] for v in videos.values()} == set(VIDEOS)
    assert videos[1]["file_names"][:2] == [f"{videos[1]['name']}/00000.png", f"{videos[1]['name']}/00001.png"]
    seen = set()
    for ann in doc["annotations"]:
        v = videos[ann["video_id"]]
        vid, obj = v["name"], ann["fastsam2_obj_id"]
        seen.add((vid, obj))
        assert len(ann["segmentations"]) == v["length"] == len(v["file_names"]) == VIDEOS[vid][0]
        for t, seg in enumerate(ann["segmentations"]):
            want = truth[vid][obj].get(t)
            if want is None or not want.any():
                assert seg is None and ann["areas"][t] is None and ann["bboxes"][t] is None
                continue
            got = mask_utils.decode(seg).astype(bool)
            assert np.array_equal(got, want), (vid, obj, t)
            assert ann["areas"][t] == int(want.sum())
            ys, xs = np.nonzero(want)
            assert ann["bboxes"][t] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        expected = {("two-obj", 1): "disc", ("two-obj", 2): "square", ("late", 1): "object"}[(vid, obj)]
        assert cats[ann["category_id"]] == expected
    assert seen == {(v, o) for v, objs in truth.items() for o in objs}


def test_davis_export_evaluates_to_one_against_itself(run, tmp_path):
    root, truth = run
    out = tmp_path / "davis"
    r = CliRunner().invoke(main, ["export", root, "--format", "davis", "--output", str(out)])
    assert r.exit_code == 0, r.output
    for vid, (n, _, start) in VIDEOS.items():
        files = sorted(os.listdir(out / "Annotations" / vid))
        assert files == [f"{t:05d}.png" for t in range(start, n)]  # from the prompt frame, true numbers
        for t in range(start, n):
            im = Image.open(out / "Annotations" / vid / f"{t:05d}.png")
            assert im.mode == "P"
            labels = np.asarray(im)
            for obj, frames in truth[vid].items():
                want = frames.get(t, np.zeros((48, 64), bool))
                assert np.array_equal(labels == obj, want), (vid, obj, t)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["videos"]["two-obj"]["objects"]["1"]["category"] == "a red disc"
    assert "00003" not in meta["videos"]["two-obj"]["objects"]["2"]["frames"]
    assert (out / "ImageSets" / "videos.txt").read_text().split() == sorted(VIDEOS)
    assert meta["videos"]["late"]["first_frame"] == "00002"
    # The PNGs against themselves; and the run's Parquet, which eval maps by frame position (so only
    # the video labelled from frame 0 lines up).
    for pred, seqs in ((str(out / "Annotations"), sorted(VIDEOS)), (root, ["two-obj"])):
        scores = tmp_path / f"scores-{os.path.basename(pred)}.json"
        r = CliRunner().invoke(main, ["eval", "--gt", str(out), "--pred", pred, "--json", str(scores),
                                      "--sequences", ",".join(seqs)])
        assert r.exit_code == 0, r.output
        doc = json.loads(scores.read_text())
        assert doc["J&F-Mean"] == pytest.approx(1.0), doc
        assert sorted(doc["sequences"]) == seqs


def test_sav_masklets_round_trip(run, tmp_path):
    root, truth = run
    out = tmp_path / "sav"
    stats = export_run(root, str(out), "sa-v", every=2, sav_suffix="manual")
    assert (stats.videos, stats.objects) == (2, 3)
    doc = json.loads((out / "two-obj_manual.json").read_text())
    assert doc["masklet_num"] == 2 and doc["masklet_id"] == [0, 1] and doc["fastsam2_obj_id"] == [1, 2]
    assert doc["fastsam2_frame_idx"] == [0, 2, 4] and len(doc["masklet"]) == 3
    assert doc["video_frame_count"] == 6 and (doc["video_height"], doc["video_width"]) == (48, 64)
    for i, t in enumerate(doc["fastsam2_frame_idx"]):
        for k, obj in enumerate(doc["fastsam2_obj_id"]):
            assert np.array_equal(mask_utils.decode(doc["masklet"][i][k]).astype(bool), truth["two-obj"][obj][t])
    late = json.loads((out / "late_manual.json").read_text())
    # Frames 0 and 1 precede the prompt frame: empty masks, first appearance at annotation index 1 (frame 2).
    assert not mask_utils.decode(late["masklet"][0][0]).any() and late["masklet_first_appeared_frame"] == [1]
    assert late["masklet_type"] == ["auto"] and late["fastsam2_random_weights"] is True


def test_export_reads_and_writes_s3(run, s3_env, tmp_path):
    import s3fs

    root, truth = run
    fs = s3fs.S3FileSystem()
    fs.put(root, f"{s3_env}/runs/r1", recursive=True)
    r = CliRunner().invoke(main, ["export", f"s3://{s3_env}/runs/r1", "--format", "coco-video",
                                  "-o", f"s3://{s3_env}/exports/coco"])
    assert r.exit_code == 0, r.output
    remote = json.loads(fs.cat(f"{s3_env}/exports/coco/instances.json"))
    export_run(root, str(tmp_path / "local.json"), "coco-video")
    local = json.loads((tmp_path / "local.json").read_text())
    assert remote["annotations"] == local["annotations"] and remote["videos"] == local["videos"]
    export_run(f"s3://{s3_env}/runs/r1", f"s3://{s3_env}/exports/davis", "davis", videos=["late"])
    assert len(fs.ls(f"{s3_env}/exports/davis/Annotations/late")) == 3  # frames 2-4


def test_export_errors_are_one_line(tmp_path, run):
    root, _ = run
    cases = [
        ([str(tmp_path / "nope"), "--format", "davis", "-o", str(tmp_path / "o")], "run not found"),
        ([str(tmp_path), "--format", "davis", "-o", str(tmp_path / "o")], "no finished video"),
        ([root, "--format", "davis", "-o", str(tmp_path / "o"), "--videos", "ghost"], "ghost"),
        ([root, "--format", "sa-v", "-o", str(tmp_path / "o"), "--every", "0"], "--every"),
    ]
    for args, msg in cases:
        r = CliRunner().invoke(main, ["export", *args])
        assert r.exit_code != 0 and msg in r.output and "Traceback" not in r.output, r.output
    with pytest.raises(ExportError, match="unknown export format"):
        export_run(root, str(tmp_path / "o"), "voc")


def test_eval_of_a_random_weight_run_says_meaningless(run, tmp_path):
    root, _ = run  # written with random_weights=True
    out = tmp_path / "davis"
    export_run(root, str(out), "davis")
    r = CliRunner().invoke(main, ["eval", "--gt", str(out), "--pred", root, "--sequences", "two-obj"],
                           terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "random weights: meaningless" in r.output and "RANDOM WEIGHTS" in r.output
