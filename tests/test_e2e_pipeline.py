"""End to end on real parts: local Ray (2 CPUs), loopback S3 (moto server), real Parquet,
random-weight SAM2.1 hiera-t at 256 px."""

from __future__ import annotations


import numpy as np
import pyarrow.parquet as pq
import pytest
import s3fs
from click.testing import CliRunner

from fastsam2 import rle
from fastsam2.cli import main
from fastsam2.pipeline import EXIT_VIDEOS_FAILED
from fastsam2.storage import read_table
from fastsam2.synthetic import make_video, write_mp4
from helpers import click_rows, write_manifest

pytestmark = pytest.mark.slow

FRAMES = {"vid-a": 4, "vid-b": 3, "vid-c": 5}


@pytest.fixture
def s3_dataset(tmp_path, s3_env):
    """Three good mp4s, one corrupt, one missing, one with a prompt outside the frame; all on S3."""
    fs = s3fs.S3FileSystem()
    rows = []
    for seed, (name, n) in enumerate(FRAMES.items()):
        video = make_video(name, num_frames=n, height=64, width=80, num_objects=1 + (name == "vid-c"), seed=seed)
        local = write_mp4(video, tmp_path / f"{name}.mp4")
        fs.put(str(local), f"{s3_env}/in/{name}.mp4")
        rows += click_rows(video, f"s3://{s3_env}/in/{name}.mp4")
    fs.pipe(f"{s3_env}/in/corrupt.mp4", b"\x00\x01garbage" * 500)
    rows.append({"uri": f"s3://{s3_env}/in/corrupt.mp4", "obj_id": 1, "point": "5,5"})
    rows.append({"uri": f"s3://{s3_env}/in/missing.mp4", "obj_id": 1, "point": "5,5"})
    fs.pipe(f"{s3_env}/in/outside.mp4", fs.cat(f"{s3_env}/in/vid-a.mp4"))
    rows.append({"uri": f"s3://{s3_env}/in/outside.mp4", "obj_id": 1, "point": "500,5"})
    manifest = write_manifest(tmp_path / "manifest.csv", rows, ["uri", "obj_id", "point"])
    fs.put(str(manifest), f"{s3_env}/in/manifest.csv")
    return f"s3://{s3_env}/in/manifest.csv", f"s3://{s3_env}/out"


def test_run_to_s3_with_bad_inputs_then_rerun_is_a_no_op(ray_local, s3_dataset):
    manifest, out = s3_dataset
    args = ["run", manifest, "--output", out, "--random-weights", "--image-size", "256", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_VIDEOS_FAILED, result.output  # some videos failed: scripts can tell
    assert "3 video(s) labelled, 3 failed" in result.output
    assert "[6/6]" in result.output and "corrupt: error" in result.output  # per-video progress lines
    assert "RANDOM WEIGHTS" in result.output

    masks = read_table(out, "masks")
    expected_rows = sum(n * (2 if name == "vid-c" else 1) for name, n in FRAMES.items())
    assert masks.num_rows == expected_rows
    for row in masks.to_pylist():
        decoded = rle.decode(row["rle"], row["height"], row["width"])
        assert decoded.shape == (64, 80) and int(decoded.sum()) == row["area"]
    keys = {(r["video_id"], r["obj_id"], r["frame_idx"]) for r in masks.to_pylist()}
    assert len(keys) == masks.num_rows  # no duplicates

    videos = {r["video_id"]: r for r in read_table(out, "videos").to_pylist()}
    assert set(videos) == set(FRAMES)
    v = videos["vid-c"]
    assert v["num_frames"] == 5 and v["num_objects"] == 2 and v["random_weights"] is True
    assert v["prompt_source"] == "user" and v["image_size"] == 256
    assert v["keep_ratio"] == pytest.approx(0.3) and v["tokens_kept"] == pytest.approx(0.3, abs=0.02)  # the default
    assert v["fps"] > 0 and v["peak_memory_bytes"] > 0 and v["memory_bank_bytes"] > 0
    assert read_table(out, "frames").num_rows == sum(FRAMES.values())

    errors = {r["video_id"]: r for r in read_table(out, "errors").to_pylist()}
    assert set(errors) == {"corrupt", "missing", "outside"}
    assert errors["corrupt"]["error_type"] == "VideoReadError"
    assert errors["missing"]["error_type"] == "FileNotFoundError"
    assert errors["outside"]["error_type"] == "PromptError" and "outside" in errors["outside"]["message"]

    fs = s3fs.S3FileSystem()
    before = {p: fs.info(p)["LastModified"] for p in fs.find(out.removeprefix("s3://"))}
    again = CliRunner().invoke(main, args)
    assert again.exit_code == EXIT_VIDEOS_FAILED, again.output  # the three failures failed again
    assert "0 video(s) labelled" in again.output and "3 already done" in again.output
    after = {p: fs.info(p)["LastModified"] for p in fs.find(out.removeprefix("s3://"))}
    # done videos untouched; the three failures were retried and failed the same way
    assert {p: t for p, t in after.items() if "/errors/" not in p} == {p: t for p, t in before.items() if "/errors/" not in p}
    assert read_table(out, "masks").num_rows == expected_rows


def test_real_davis_frames(ray_local, shared_data, tmp_path):
    """Two real DAVIS-2016 sequences, clicked at the first frame's ground-truth object."""
    from PIL import Image
    from scipy.ndimage import distance_transform_edt

    root = shared_data / "davis2016-val"
    seqs = ["car-shadow", "kite-surf"]
    rows = []
    for seq in seqs:
        gt = np.array(Image.open(sorted((root / "Annotations" / "480p" / seq).glob("*.png"))[0])) > 0
        y, x = np.unravel_index(int(np.argmax(distance_transform_edt(gt))), gt.shape)
        rows.append({"uri": str(root / "JPEGImages" / "480p" / seq), "point": f"{x},{y}"})
    manifest = write_manifest(tmp_path / "davis.csv", rows, ["uri", "point"])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(manifest), "-o", str(out), "--random-weights",
                                       "--image-size", "256", "--device", "cpu", "--max-frames", "3"])
    assert result.exit_code == 0, result.output
    masks = pq.read_table(out / "masks").to_pylist()
    assert {m["video_id"] for m in masks} == set(seqs)
    assert len(masks) == 6 and all((m["height"], m["width"]) == (480, 854) for m in masks)


def test_auto_prompts_through_ray_on_davis(ray_local, shared_data, tmp_path):
    """No user prompt: RPN box -> click -> tiny LLaVA caption -> phrase, then tracking."""
    frames_root = shared_data / "davis2016-val" / "JPEGImages" / "480p"
    seqs = sorted(p.name for p in frames_root.iterdir() if p.is_dir())
    out = tmp_path / "auto"
    result = CliRunner().invoke(main, ["run", str(shared_data / "davis2016-val"), "-o", str(out), "--random-weights",
                                       "--prompts", "auto", "--image-size", "256", "--device", "cpu", "--max-frames", "2"])
    assert result.exit_code == 0, result.output
    videos = {r["video_id"]: r for r in pq.read_table(out / "videos").to_pylist()}
    assert sorted(videos) == seqs
    for v in videos.values():
        x0, y0, x1, y1 = v["box"]
        x, y = v["point"]
        assert x0 <= x <= x1 and y0 <= y <= y1, v
        assert v["prompt_source"] == "auto" and v["objectness"] >= 0.5
        assert v["caption"] and v["text"] and len(v["text"].split()) <= 6
        assert v["caption_backend"] == "transformers" and v["random_weights"] is True
    masks = pq.read_table(out / "masks").to_pylist()
    assert len(masks) == sum(videos[s]["num_objects"] * (2 - videos[s]["prompt_frame_idx"]) for s in seqs)
    objects = pq.read_table(out / "objects").to_pylist()
    assert len(objects) == sum(v["num_objects"] for v in videos.values())
    for o in objects:  # each object its own caption and phrase, from the batched caption call
        assert o["caption"] and o["phrase"] and len(o["phrase"].split()) <= 6, o
        assert o["caption_backend"] == "transformers" and o["prompt_source"] == "auto"


def test_every_object_and_late_ones_through_ray_on_davis(ray_local, shared_data, tmp_path):
    """--max-objects 3 --detect-every 4: each video ends ok or with a named error, and objects/
    agrees with masks/ (ids, first frames, no rows before an object's first frame)."""
    frames_root = shared_data / "davis2016-val" / "JPEGImages" / "480p"
    seqs = sorted(p.name for p in frames_root.iterdir() if p.is_dir())
    out = tmp_path / "multi"
    result = CliRunner().invoke(main, ["run", str(shared_data / "davis2016-val"), "-o", str(out), "--random-weights",
                                       "--prompts", "auto", "--image-size", "256", "--device", "cpu",
                                       "--max-frames", "6", "--max-objects", "3", "--detect-every", "4",
                                       "--caption-backend", "none"])
    assert result.exit_code in (0, EXIT_VIDEOS_FAILED), result.output
    videos = {r["video_id"]: r for r in read_table(str(out), "videos").to_pylist()}
    errors = {r["video_id"]: r for r in read_table(str(out), "errors").to_pylist()}
    assert sorted(set(videos) | set(errors)) == seqs and not set(videos) & set(errors)
    for e in errors.values():
        assert e["stage"] and e["error_type"] and e["message"]
    assert videos, result.output
    objects = read_table(str(out), "objects").to_pylist()
    masks = read_table(str(out), "masks").to_pylist()
    for vid, v in videos.items():
        objs = {o["obj_id"]: o for o in objects if o["video_id"] == vid}
        rows = [m for m in masks if m["video_id"] == vid]
        assert len(objs) == v["num_objects"] >= 1
        assert {m["obj_id"] for m in rows} == set(objs)
        first = [o for o in objs.values() if o["prompt_frame_idx"] == v["prompt_frame_idx"]]
        assert 1 <= len(first) <= 3  # --max-objects on the first frame
        for obj_id, o in objs.items():
            frames = sorted(m["frame_idx"] for m in rows if m["obj_id"] == obj_id)
            assert frames == list(range(o["first_frame_idx"], 6)), (vid, obj_id)
            assert o["prompt_source"] == "auto" and o["random_weights"] is True
            if o["prompt_frame_idx"] != v["prompt_frame_idx"]:  # found later, on a detection frame
                assert (o["prompt_frame_idx"] - v["prompt_frame_idx"]) % 4 == 0
    for f in read_table(str(out), "frames").to_pylist():
        assert f["encoder_calls"] == 1


def test_demo_labels_its_samples_and_scores_them(ray_local, tmp_path):
    result = CliRunner().invoke(main, ["demo", "--output", str(tmp_path / "d"), "--image-size", "256",
                                       "--frames", "3", "--random-weights", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "3 video(s) labelled, 0 failed" in result.output
    assert "J&F-Mean against the samples' ground truth" in result.output
    masks = pq.read_table(tmp_path / "d" / "results" / "masks")
    assert masks.num_rows == 3 + 3 + 2 * 3  # the last sample has two objects
