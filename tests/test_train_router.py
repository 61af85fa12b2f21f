"""train-router on the DAVIS-2016 val sample: the loss falls and the weights load back."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from fastsam2.models.sam2 import build_video_predictor
from fastsam2.cli.tracking import train_router_command
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET
from fastsam2.tracking.router import build_router


def test_train_router_loss_falls(shared_data, tmp_path):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = tmp_path / "router.pt"
    args = [
        "--data-root", str(shared_data / "davis2016-val"),
        "--out", str(out),
        "--random-weights", "--image-size", "256",
        "--clip-model", "fastsam2-tiny", "--clip-random-weights",
        "--frames-per-sequence", "3", "--frame-stride", "10",
        "--epochs", "15", "--lr", "3e-3", "--device", "cpu",
    ]
    result = CliRunner().invoke(train_router_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["frames"] == 12 and len(summary["sequences"]) == 4
    assert 0.0 < summary["positive_fraction"] < 1.0
    assert summary["last_loss"] < 0.9 * summary["first_loss"]

    blob = torch.load(out, weights_only=False)
    assert blob["sam2_config"] == "sam2.1_hiera_t" and blob["image_size"] == 256
    losses = blob["train_log"]["losses"]
    assert len(losses) == 15 and losses[-1] < losses[0]

    # The saved router drives the pruned predictor (same CLIP config, random weights).
    router = build_router(router_weights=out, clip_model="fastsam2-tiny", clip_random_weights=True)
    assert router.mlp is not None and router.config.semantic == "clip"
    predictor = build_video_predictor("sam2.1_hiera_t", image_size=256, device="cpu", random_weights=True,
                                      predictor_target=PREDICTOR_TARGET)
    predictor.configure_pruning(keep_ratio=0.3, router=router)
    assert predictor.router is router
