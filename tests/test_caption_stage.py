"""The propose stage cuts the caption region once and hands it on as JPEG bytes; the caption
stage captions from those bytes alone (it never opens the video). Random weights throughout:
the boxes and captions are noise, the hand-over is the point."""

from __future__ import annotations

import numpy as np

from fastsam2.config import JobConfig, VideoTask
from fastsam2.prompts.caption import jpeg_to_array
from fastsam2.stages import CaptionStage, ProposeStage, _rows
from fastsam2.synthetic import make_video, write_frames


def _cfg(tmp_path, **prompts) -> JobConfig:
    return JobConfig(inputs=[str(tmp_path)], output=str(tmp_path / "out"),
                     model={"image_size": 256, "device": "cpu", "random_weights": True},
                     prompts={"min_objectness": 0.0, **prompts}, pruning={"keep_ratio": 1.0})


def test_propose_cuts_the_region_and_caption_uses_only_it(tmp_path):
    video = make_video("v", num_frames=2, height=64, width=80, seed=0)
    frames_dir = write_frames(video, tmp_path)
    cfg = _cfg(tmp_path)
    tasks = [VideoTask(video_id="v", uri=str(frames_dir), kind="frames", prompt_source="auto"),
             VideoTask(video_id="w", uri=str(frames_dir), kind="frames", prompt_source="auto", text="a red disc")]
    proposed = ProposeStage(cfg.model_dump_json())(_rows(tasks))
    crops, no_crops = proposed["region_jpegs"]
    assert no_crops is None, "a video with the user's text needs no caption region"
    task = VideoTask.model_validate_json(proposed["task"][0])
    assert len(crops) == len(task.objects) >= 1  # one crop per object
    region = jpeg_to_array(crops[0])
    x0, y0, x1, y1 = task.objects[0].box
    assert region.shape[0] == region.shape[1] >= max(x1 - x0, y1 - y0) * 0.9  # the padded square crop
    assert region.shape[0] <= max(80, 64) * 1.3 + 2

    # The caption stage gets the rows with a URI nobody can open: only the JPEG is read.
    for i in range(len(tasks)):
        t = VideoTask.model_validate_json(proposed["task"][i])
        t.uri = "s3://no-such-bucket/never-read.mp4"
        proposed["task"][i] = t.model_dump_json()
    captioned = CaptionStage(cfg.model_dump_json())(proposed)
    assert "region_jpegs" not in captioned  # later stages carry no image bytes
    got = [VideoTask.model_validate_json(t) for t in captioned["task"]]
    assert got[0].error is None and got[0].caption and got[0].caption_backend == "transformers"
    assert got[1].caption is None and got[1].text == "a red disc"


def test_a_row_without_its_region_fails_alone_with_a_named_cause(tmp_path):
    cfg = _cfg(tmp_path)
    task = VideoTask(video_id="v", uri="unused://", prompt_source="auto")
    rows = _rows([task], [None])
    out = CaptionStage(cfg.model_dump_json())(rows)
    failed = VideoTask.model_validate_json(out["task"][0])
    assert failed.error["stage"] == "caption" and "no region image" in failed.error["message"]
    assert isinstance(out["video_id"], np.ndarray)
