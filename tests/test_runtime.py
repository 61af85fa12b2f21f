"""Tracking engine runtime: precision (bf16 autocast on CPU), stall-free timers, import safety.

SAM2 runs with RANDOM weights here (masks are meaningless, numerics are real).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fastsam2.config import ObjectPrompt
from fastsam2.models.factory import load_sam2
from fastsam2.synthetic import first_frame_prompts, make_video
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET
from fastsam2.tracking.instrument import ComponentTimer
from fastsam2.tracking.runtime import autocast_dtype, resolve_precision
from fastsam2.tracking.streaming import StreamingTracker

#: bf16 vs fp32 on CPU, random weights, 128 px, keep 0.3: mask IoU per frame and |score| gap.
BF16_MIN_IOU = 0.97
BF16_MAX_SCORE_GAP = 5e-3


def test_precision_resolution():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "bf16"  # decided without touching CUDA
    assert autocast_dtype("fp32", "cuda") is None
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int8", "cpu")


def test_bf16_autocast_on_cpu_stays_close_to_fp32():
    p = load_sam2("sam2.1_hiera_t", image_size=128, device="cpu", random_weights=True,
                              predictor_target=PREDICTOR_TARGET).model
    p.configure_pruning(keep_ratio=0.3)  # router + subset attention + pruned bank under autocast
    video = make_video("v", num_frames=3, height=64, width=80, seed=3)
    prompt = first_frame_prompts(video)[0]
    objs = [ObjectPrompt(obj_id=1, point=prompt["point"], box=prompt["box"])]
    runs = {}
    for precision in ("fp32", "bf16"):
        p.configure_runtime(precision)
        runs[precision] = list(StreamingTracker(p).track(video.frames, 3, 64, 80, objs))
    assert not torch.is_autocast_enabled("cpu")  # autocast never leaks out of the tracker
    gaps = []
    for a, b in zip(runs["fp32"], runs["bf16"], strict=True):
        iou = (a.masks & b.masks).sum() / max((a.masks | b.masks).sum(), 1)
        assert iou >= BF16_MIN_IOU, f"frame {a.frame_idx}: IoU {iou:.4f}"
        gaps.append(float(np.abs(a.scores - b.scores).max()))
    assert max(gaps) <= BF16_MAX_SCORE_GAP
    assert max(gaps) > 0.0  # bf16 really ran (identical scores would mean no autocast)
    bank = runs["bf16"][-1]
    assert bank.stats["tokens_kept"] < bank.stats["tokens_total"]


class _EventDouble:
    """Test double for ``torch.cuda.Event`` (no GPU here): records a perf_counter stamp;
    counts how often anyone waits on an event."""

    waits = 0

    def __init__(self):
        self.t = None

    def record(self):
        import time

        self.t = time.perf_counter()

    def synchronize(self):
        _EventDouble.waits += 1

    def elapsed_time(self, other) -> float:
        return (other.t - self.t) * 1000.0


def test_event_timer_reads_once_per_frame(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: synced.append(a))
    _EventDouble.waits = 0
    timer = ComponentTimer("cpu", event_factory=_EventDouble)
    stats: dict = {}
    for key in ("ms_image_encoder", "ms_decoder", "ms_decoder"):
        with timer.time(stats, key):
            sum(range(20000))
    assert stats == {} and timer.pending == 3  # nothing read between components
    timer.flush()
    assert _EventDouble.waits == 1 and timer.pending == 0 and not synced
    assert stats["ms_image_encoder"] > 0 and stats["ms_decoder"] > 0
    timer.flush()  # nothing pending: no wait
    assert _EventDouble.waits == 1


def test_one_batched_call_gives_each_frame_an_equal_share():
    """Lockstep: one encoder call serves several videos' frames; each frame's stats get a share."""

    class _Fixed(_EventDouble):
        def elapsed_time(self, other) -> float:
            return 30.0

    timer = ComponentTimer("cpu", event_factory=_Fixed)
    a, b, c = {"ms_image_encoder": 1.0}, {}, {}
    with timer.time([a, b, c], "ms_image_encoder"):
        pass
    timer.flush()
    assert (a["ms_image_encoder"], b["ms_image_encoder"], c["ms_image_encoder"]) == (11.0, 10.0, 10.0)


def test_cpu_timer_is_immediate():
    timer = ComponentTimer("cpu", profile=True)
    stats: dict = {}
    with timer.time(stats, "ms_router"):
        sum(range(20000))
    assert stats["ms_router"] > 0 and timer.pending == 0 and not timer.uses_events


def test_cuda_paths_import_on_cpu():
    code = ("import torch; from fastsam2.tracking import instrument, runtime, pruned_predictor, factory; "
            "t = instrument.ComponentTimer('cuda'); assert t.uses_events; "
            "print(runtime.resolve_precision('auto', 'cuda'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bf16"


def test_flags_reach_the_model_config():
    from fastsam2.cli.options import build_config

    cfg = build_config(("in.mp4",), output="out", precision="bf16", profile=True, compile_model=True)
    assert (cfg.model.precision, cfg.model.profile, cfg.model.compile) == ("bf16", True, True)
    default = build_config(("in.mp4",), output="out").model
    assert (default.precision, default.profile, default.compile) == ("auto", False, False)


def test_compile_wraps_forward_once_and_matches_eager():
    """``--compile``'s wrapping on a small module with the eager backend (inductor on a
    real model is left to benchmarks/gpu_check.sh: compiling hiera on CPU takes minutes)."""
    from types import SimpleNamespace

    from fastsam2.tracking.runtime import compile_modules

    torch.manual_seed(0)
    enc, attn = torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    want = attn(enc(x))
    pred = SimpleNamespace(image_encoder=enc, memory_attention=attn)
    assert compile_modules(pred, backend="eager") == ["image_encoder", "memory_attention"]
    assert compile_modules(pred, backend="eager") == []  # idempotent
    assert "forward" in vars(enc)  # forward replaced on the instance, module kept
    torch.testing.assert_close(attn(enc(x)), want)
