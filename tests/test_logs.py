"""Quiet logs: no SAM2 progress bars or ten-line ``_C`` warnings per video; ``--log-level`` works."""

from __future__ import annotations

import logging

import numpy as np
from click.testing import CliRunner

import fastsam2
from fastsam2.cli import main
from fastsam2.synthetic import first_frame_prompts, make_video


def test_tracking_prints_no_sam2_bars_or_extension_warning(capfd, caplog, monkeypatch):
    import fastsam2.api
    import fastsam2.logs

    fastsam2.logs._say_no_extension.cache_clear()  # as in a fresh actor process
    monkeypatch.setattr(fastsam2.api, "_TRACKERS", {})  # build the model here, not reuse another test's
    video = make_video("quiet", num_frames=3, height=48, width=64, seed=1)
    point = first_frame_prompts(video)[0]["point"]
    with caplog.at_level(logging.INFO, logger="fastsam2"):
        for _ in range(2):  # two videos: the notice about _C comes once at most
            frames = list(fastsam2.label_video(np.stack(video.frames), point=point, random_weights=True,
                                               image_size=256, device="cpu", keep_ratio=1.0))
            assert len(frames) == 3
    err = capfd.readouterr().err
    assert "propagate in video" not in err, err
    assert "Skipping the post-processing step" not in err, err
    notices = [r for r in caplog.records if "_C" in r.getMessage()]
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        assert len(notices) == 1 and notices[0].levelno == logging.INFO
    else:
        assert not notices


def test_log_level_option(monkeypatch):
    monkeypatch.delenv("FASTSAM2_LOG_LEVEL", raising=False)
    r = CliRunner().invoke(main, ["--log-level", "debug", "report", "--help"])
    assert r.exit_code == 0, r.output
    assert logging.getLogger("fastsam2").getEffectiveLevel() == logging.DEBUG
    import os

    assert os.environ["FASTSAM2_LOG_LEVEL"] == "debug"  # Ray workers started later inherit it
    r = CliRunner().invoke(main, ["-v", "report", "--help"])
    assert logging.getLogger("fastsam2").getEffectiveLevel() == logging.INFO
    r = CliRunner().invoke(main, ["--log-level", "loud", "report", "--help"])
    assert r.exit_code == 2 and "--log-level" in r.output
    logging.getLogger("fastsam2").setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.WARNING)
