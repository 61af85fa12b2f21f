"""Stages called directly (no Ray): failures travel as rows to errors/, never as exceptions."""

from __future__ import annotations

import numpy as np

from fastsam2.config import JobConfig, ObjectPrompt, VideoTask
from fastsam2.output import from_ipc
from fastsam2.stages import ProposeStage, TrackStage, _rows
from fastsam2.synthetic import make_video, write_frames


def test_no_proposal_becomes_a_propose_error_row_that_tracking_passes_through(tmp_path):
    video = make_video("v", num_frames=2, height=64, width=80, seed=0)
    frames_dir = write_frames(video, tmp_path)
    cfg = JobConfig(inputs=[str(tmp_path)], output=str(tmp_path / "out"),
                    model={"image_size": 256, "device": "cpu", "random_weights": True},
                    prompts={"min_objectness": 1.01},  # no proposal can pass
                    pruning={"keep_ratio": 1.0})
    task = VideoTask(video_id="v", uri=str(frames_dir), kind="frames", prompt_source="auto")
    proposed = ProposeStage(cfg.model_dump_json())(_rows([task]))
    failed = VideoTask.model_validate_json(proposed["task"][0])
    assert failed.error["stage"] == "propose" and failed.error["error_type"] == "NoProposalError"
    assert "objectness" in failed.error["message"] and failed.objects == []

    out = TrackStage(cfg.model_dump_json())(proposed)
    assert list(out["status"]) == ["error"]
    errors = from_ipc(out["payload"][0]["errors"]).to_pylist()
    assert errors[0]["stage"] == "propose" and errors[0]["video_id"] == "v" and errors[0]["failed_at"] is not None
    assert set(out["payload"][0]) == {"errors"}
    assert isinstance(out["video_id"], np.ndarray)


def test_writer_survives_merged_payloads_and_failed_writes(tmp_path):
    """Ray merges a batch's payload dicts (absent tables become None); a write that fails is a row."""
    from fastsam2.output import to_ipc
    from fastsam2.schema import table_from_rows
    from fastsam2.stages import WriteStage

    err = to_ipc(table_from_rows("errors", [{"video_id": "bad", "uri": "u", "stage": "track", "error_type": "E", "message": "m"}]))
    ok = {"masks": to_ipc(table_from_rows("masks", [{"video_id": "good", "obj_id": 1, "frame_idx": 0}])),
          "frames": to_ipc(table_from_rows("frames", [{"video_id": "good", "frame_idx": 0}])),
          "videos": to_ipc(table_from_rows("videos", [{"video_id": "good", "status": "ok"}]))}
    batch = {"video_id": np.array(["bad", "good"], dtype=object), "status": np.array(["error", "ok"], dtype=object),
             "payload": np.array([{"errors": err, "masks": None, "frames": None, "videos": None},
                                  {"errors": None, **ok}], dtype=object)}
    out_root = tmp_path / "out"
    cfg = JobConfig(inputs=["x"], output=str(out_root))
    summary = WriteStage(cfg.model_dump_json())(batch)
    assert list(summary["status"]) == ["error", "ok"] and list(summary["num_masks"]) == [0, 1]
    assert (out_root / "errors" / "bad.parquet").exists() and (out_root / "videos" / "good.parquet").exists()

    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")  # the output root is a file: every write fails, none raises
    cfg = JobConfig(inputs=["x"], output=str(blocked))
    summary = WriteStage(cfg.model_dump_json())(batch)
    assert list(summary["status"]) == ["error", "error"]
    assert all("[write]" in m for m in summary["message"])


def test_gpu_plan_fits_one_gpu_and_uses_whole_ones_on_big_clusters():
    from fastsam2.pipeline import gpu_plan
    from fastsam2.stage_specs import STAGE_SPECS

    cfg = JobConfig(inputs=["x"], output="o")
    stages = ["propose", "caption", "track", "write"]
    one = gpu_plan(cfg, stages, cluster_gpus=1)
    assert 0 < one["track"] < 1 and 0 < one["propose"] < one["track"] and sum(one.values()) <= 1.0
    assert gpu_plan(cfg, stages, cluster_gpus=8) == {s: STAGE_SPECS[s].gpus for s in stages}
    assert set(gpu_plan(cfg, stages, cluster_gpus=0).values()) == {0.0}
    pinned = JobConfig(inputs=["x"], output="o", resources={"track": {"num_gpus": 0.5}})
    assert gpu_plan(pinned, ["track"], cluster_gpus=8) == {"track": 0.5}


def test_track_stage_runs_videos_in_lockstep_and_fails_them_alone(tmp_path):
    """--videos-per-actor 2: good videos of different lengths come back in batch order with
    their rows; a video whose prompt is off the frame and one that failed upstream are
    errors/ rows of their own (RANDOM weights, 256 px)."""
    tasks = []
    for name, n in (("long", 3), ("short", 2)):
        video = make_video(name, num_frames=n, height=64, width=80, seed=n)
        tasks.append(VideoTask(video_id=name, uri=str(write_frames(video, tmp_path / name)), kind="frames",
                               objects=[{"obj_id": 1, "point": [40.0, 32.0]}]))
    off = tasks[1].model_copy(update={"video_id": "off", "objects": [ObjectPrompt(obj_id=1, point=[500.0, 32.0])]})
    upstream = tasks[0].model_copy(update={"video_id": "upstream", "error": {
        "video_id": "upstream", "uri": tasks[0].uri, "stage": "propose", "error_type": "E", "message": "m"}})
    cfg = JobConfig(inputs=[str(tmp_path)], output=str(tmp_path / "out"), videos_per_actor=2,
                    model={"image_size": 256, "device": "cpu", "random_weights": True},
                    pruning={"keep_ratio": 0.3, "semantic": "none"})
    assert cfg.resource("track").batch_size == 2  # an actor's batch holds its lockstep videos

    out = TrackStage(cfg.model_dump_json())(_rows([tasks[0], off, upstream, tasks[1]]))
    assert list(out["video_id"]) == ["long", "off", "upstream", "short"]
    assert list(out["status"]) == ["ok", "error", "error", "ok"]
    assert from_ipc(out["payload"][1]["errors"]).to_pylist()[0]["error_type"] == "PromptError"
    for i, n in ((0, 3), (3, 2)):
        frames = from_ipc(out["payload"][i]["frames"]).to_pylist()
        assert [f["frame_idx"] for f in frames] == list(range(n))
        assert all(f["encoder_calls"] == 1 for f in frames)
        assert from_ipc(out["payload"][i]["masks"]).num_rows == n
