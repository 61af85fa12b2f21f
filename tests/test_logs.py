"""Quiet logs: no SAM2 progress bars or ten-line ``_C`` warnings per video; ``--log-level`` works.

The end-to-end check (a predictor built by our factory tracks a video and prints
no bar) is in ``test_api.py``, which builds that model anyway.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch
from click.testing import CliRunner

import fastsam2.logs
from fastsam2.cli import main


def test_sam2_bars_and_extension_warning_are_quiet(capfd, caplog, monkeypatch):
    import sam2.sam2_video_predictor as svp
    from sam2.utils.misc import fill_holes_in_mask_scores

    monkeypatch.setattr(svp, "tqdm", svp.tqdm.func if hasattr(svp.tqdm, "func") else svp.tqdm)  # as imported
    monkeypatch.delenv(fastsam2.logs.LEVEL_ENV, raising=False)
    fastsam2.logs._say_no_extension.cache_clear()  # as in a fresh actor process
    with caplog.at_level(logging.INFO, logger="fastsam2"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning recorded, unless quiet_sam2 filters it
        for _ in range(2):  # two builds in one process: one notice at most
            fastsam2.logs.quiet_sam2()
        for _ in svp.tqdm(range(3), desc="propagate in video"):  # the name propagate_in_video calls
            pass
        mask = torch.full((1, 1, 16, 16), 5.0)
        mask[..., 4:6, 4:6] = -5.0  # a small hole: SAM2 wants its CUDA extension to fill it
        fill_holes_in_mask_scores(mask, 8)
    err = capfd.readouterr().err
    assert "propagate in video" not in err, err
    assert not [w for w in caught if "post-processing" in str(w.message)]
    notices = [r for r in caplog.records if "_C" in r.getMessage()]
    if fastsam2.logs._has_sam2_extension():
        assert not notices
    else:
        assert len(notices) == 1 and notices[0].levelno == logging.INFO


def test_debug_keeps_sam2_bars(capfd, monkeypatch):
    import sam2.sam2_video_predictor as svp
    from tqdm import tqdm

    monkeypatch.setattr(svp, "tqdm", tqdm)
    monkeypatch.setenv(fastsam2.logs.LEVEL_ENV, "debug")
    fastsam2.logs.quiet_sam2()
    for _ in svp.tqdm(range(3), desc="propagate in video"):
        pass
    assert "propagate in video" in capfd.readouterr().err


def test_log_level_option(monkeypatch):
    monkeypatch.delenv(fastsam2.logs.LEVEL_ENV, raising=False)
    r = CliRunner().invoke(main, ["--log-level", "debug", "report", "--help"])
    assert r.exit_code == 0, r.output
    assert logging.getLogger("fastsam2").getEffectiveLevel() == logging.DEBUG
    assert os.environ[fastsam2.logs.LEVEL_ENV] == "debug"  # Ray workers started later inherit it
    CliRunner().invoke(main, ["-v", "report", "--help"])
    assert logging.getLogger("fastsam2").getEffectiveLevel() == logging.INFO
    r = CliRunner().invoke(main, ["--log-level", "loud", "report", "--help"])
    assert r.exit_code == 2 and "--log-level" in r.output
    logging.getLogger().setLevel(logging.WARNING)
