"""Stages called directly (no Ray): failures travel as rows to errors/, never as exceptions."""

from __future__ import annotations

import numpy as np

from fastsam2.config import JobConfig, VideoTask
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
