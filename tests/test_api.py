"""The Python API: ``fastsam2.label_video`` matches the pipeline's masks; ``fastsam2.run`` returns the summary."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastsam2
from fastsam2 import rle
from fastsam2.storage import read_table
from fastsam2.synthetic import first_frame_prompts, make_video, write_frames
from fastsam2.tracking.streaming import PromptError

SMALL = dict(random_weights=True, image_size=256, device="cpu", keep_ratio=0.5, semantic="none")


def test_import_stays_light():
    code = "import sys, fastsam2; print('torch' in sys.modules, 'ray' in sys.modules, callable(fastsam2.label_video))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False", "True"]


def test_bad_prompts_fail_before_any_model_is_built(monkeypatch):
    import fastsam2.api as api

    monkeypatch.setattr(api, "_tracker", lambda cfg: pytest.fail("model built for a bad prompt"))
    frames = np.zeros((3, 40, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="give point"):
        fastsam2.label_video(frames)
    with pytest.raises(PromptError, match="outside the 50x40 frame"):
        fastsam2.label_video(frames, point=(60, 10))
    with pytest.raises(ValueError, match="RGB uint8"):
        fastsam2.label_video(np.zeros((3, 40, 50), np.uint8), point=(5, 5))
    with pytest.raises(ValueError, match="--keep-ratio"):
        fastsam2.run(["x.mp4"], "out", keep_ratio=2.0)
    with pytest.raises(ValueError, match="unknown option.*keep_ratoi"):
        fastsam2.run(["x.mp4"], "out", keep_ratoi=0.5)


@pytest.mark.slow
def test_label_video_matches_the_pipeline(ray_local, tmp_path, capfd):
    video = make_video("api-disc", num_frames=5, height=64, width=80, seed=3)
    folder = write_frames(video, tmp_path / "data", fmt="png")
    point = first_frame_prompts(video)[0]["point"]

    frames = list(fastsam2.label_video(str(folder), point=point, text="a disc", **SMALL))
    err = capfd.readouterr().err
    assert "propagate in video" not in err and "Skipping the post-processing" not in err, err  # quiet logs
    assert [f.frame_idx for f in frames] == list(range(5))
    assert all(f.random_weights and f.obj_ids == [1] and f.masks.shape == (1, 64, 80) for f in frames)
    assert frames[1].stats["tokens_kept"] < frames[1].stats["tokens_total"]  # pruned at keep ratio 0.5
    # In-memory frames give the same masks as the folder (PNG frames are lossless).
    in_memory = list(fastsam2.label_video(np.stack(video.frames), point=point, text="a disc", **SMALL))
    for a, b in zip(frames, in_memory):
        assert np.array_equal(a.masks, b.masks)

    out = tmp_path / "out"
    summary = fastsam2.run(str(folder), str(out), point=point, text="a disc", **SMALL)
    assert (summary.ok, summary.failed, summary.random_weights) == (1, 0, True)
    rows = sorted(read_table(str(out), "masks").to_pylist(), key=lambda r: r["frame_idx"])
    assert len(rows) == len(frames)
    for f, row in zip(frames, rows):
        assert f.rle()[0]["counts"] == row["rle"], f"frame {f.frame_idx} differs from the pipeline"
        assert np.array_equal(rle.decode(row["rle"], 64, 80), f.masks[0])
        assert f.scores[0] == pytest.approx(row["score"], abs=1e-6)
