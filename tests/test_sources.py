"""Input discovery and streaming frame readers, on local folders and on loopback S3."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fastsam2.config import VideoTask
from fastsam2.sources import FrameReader, InputError, VideoReadError, discover, video_id_for
from fastsam2.synthetic import make_video, write_frames, write_mp4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    a = make_video("a", num_frames=5, height=48, width=64, seed=1)
    b = make_video("b", num_frames=4, height=48, width=64, seed=2)
    write_frames(a, root / "davis")
    write_frames(b, root / "davis")
    write_mp4(a, root / "videos" / "clip-a.mp4")
    write_mp4(b, root / "videos" / "clip-b.mp4")
    return root, a


def test_davis_root_expands_to_one_task_per_sequence(dataset):
    root, _ = dataset
    tasks = discover([str(root / "davis")])
    assert [(t.video_id, t.kind) for t in tasks] == [("a", "frames"), ("b", "frames")]


def test_single_frame_folder_and_folder_of_files_and_glob(dataset):
    root, _ = dataset
    one = discover([str(root / "davis" / "JPEGImages" / "480p" / "b")])
    assert [t.video_id for t in one] == ["b"]
    files = discover([str(root / "videos")])
    assert [(t.video_id, t.kind) for t in files] == [("clip-a", "file"), ("clip-b", "file")]
    globbed = discover([str(root / "videos" / "*-b.mp4")])
    assert [t.video_id for t in globbed] == ["clip-b"]
    with pytest.raises(InputError, match="matches nothing"):
        discover([str(root / "videos" / "*.avi")])


def test_duplicate_inputs_are_deduplicated(dataset):
    root, _ = dataset
    tasks = discover([str(root / "videos"), str(root / "videos" / "clip-a.mp4")])
    assert len(tasks) == 2


def test_manifest_groups_objects_and_parses_prompts(dataset, tmp_path):
    root, _ = dataset
    manifest = tmp_path / "m.jsonl"
    rows = [
        {"uri": str(root / "videos" / "clip-a.mp4"), "obj_id": 1, "point": "10,12", "box": None, "text": "red disc"},
        {"uri": str(root / "videos" / "clip-a.mp4"), "obj_id": 2, "point": None, "box": [1, 2, 30, 40], "text": None},
        {"uri": "videos/clip-b.mp4", "obj_id": None, "point": None, "box": None, "text": None},
    ]
    # relative URIs resolve against the manifest's folder
    (tmp_path / "videos").symlink_to(root / "videos")
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    tasks = discover([str(manifest)])
    assert len(tasks) == 2
    a = tasks[0]
    assert a.text == "red disc"
    assert [(o.obj_id, o.point, o.box) for o in a.objects] == [(1, [10.0, 12.0], None), (2, None, [1.0, 2.0, 30.0, 40.0])]
    assert tasks[1].objects == [] and tasks[1].uri.endswith("videos/clip-b.mp4")


def test_manifest_without_uri_column_is_a_named_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,point\nx.mp4,1\n")
    with pytest.raises(InputError, match="no 'uri' column"):
        discover([str(bad)])


def test_reader_streams_mp4_and_frames_identically_sized(dataset):
    root, video = dataset
    mp4 = FrameReader(VideoTask(video_id="a", uri=str(root / "videos" / "clip-a.mp4"), kind="file"))
    assert (mp4.info.num_frames, mp4.info.height, mp4.info.width) == (5, 48, 64)
    frames = list(mp4)
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    # lossy codec, but close to the source frame
    assert np.abs(frames[2].astype(int) - video.frames[2].astype(int)).mean() < 12
    folder = FrameReader(discover([str(root / "davis")])[0], max_frames=3)
    assert folder.info.num_frames == 3 and len(list(folder)) == 3


def test_corrupt_missing_and_empty_videos_raise_named_errors(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoReadError):
        FrameReader(VideoTask(video_id="c", uri=str(corrupt), kind="file"))
    with pytest.raises(FileNotFoundError):
        FrameReader(VideoTask(video_id="m", uri=str(tmp_path / "missing.mp4"), kind="file"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoReadError, match="no frames"):
        FrameReader(VideoTask(video_id="e", uri=str(tmp_path / "empty"), kind="frames"))


def test_s3_prefix_of_videos_and_frames(dataset, s3_env):
    import s3fs

    root, _ = dataset
    fs = s3fs.S3FileSystem()
    fs.put(str(root / "videos"), f"{s3_env}/in/videos", recursive=True)
    fs.put(str(root / "davis" / "JPEGImages" / "480p" / "a"), f"{s3_env}/in/frames/a", recursive=True)
    tasks = discover([f"s3://{s3_env}/in/videos", f"s3://{s3_env}/in/frames/a"])
    assert [t.video_id for t in tasks] == ["clip-a", "clip-b", "a"]
    assert all(t.uri.startswith("s3://") for t in tasks)
    reader = FrameReader(tasks[0])
    assert reader.info.num_frames == 5 and len(list(reader)) == 5
    frames = FrameReader(tasks[2])
    assert len(list(frames)) == 5


def test_video_ids_are_filename_safe():
    assert video_id_for("s3://b/x/my clip (1).mp4") == "my_clip_1_"
    assert video_id_for("/data/JPEGImages/480p/car-shadow/") == "car-shadow"


def test_unreachable_inputs(tmp_path):
    # A single video behind an unknown scheme: a task that fails later as its own errors/ row.
    tasks = discover(["nosuchproto://bucket/clip.mp4"])
    assert [t.video_id for t in tasks] == ["clip"]
    with pytest.raises(ValueError, match="nosuchproto"):
        FrameReader(tasks[0])
    # A folder/prefix that cannot be listed: a named input error, not a traceback.
    with pytest.raises(InputError, match="cannot read nosuchproto://bucket/videos/"):
        discover(["nosuchproto://bucket/videos/"])


def test_manifest_extension_is_case_insensitive(dataset, tmp_path):
    root, _ = dataset
    manifest = tmp_path / "M.CSV"
    manifest.write_text(f"uri,point\n{root / 'videos' / 'clip-a.mp4'},3,4\n".replace(",3,4", ',"3,4"'))
    tasks = discover([str(manifest)])
    assert tasks[0].objects[0].point == [3.0, 4.0]
