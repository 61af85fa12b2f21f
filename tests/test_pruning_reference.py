"""The fast pruned predictor equals a slow dense reference at keep 0.3 and 0.1.

Same random SAM2.1 hiera-t weights (256 px), two objects (a click and a box),
windows shrunk through the model config to keep the test fast (``num_maskmem=4``:
3 previous memories plus the prompted frame; ``max_obj_ptrs_in_encoder=6``) and a
video long enough that both are full and entries leave them, and the same routing decisions on both sides: a
:class:`~pruning_reference.FixedRouter` injects kept sets that differ frame to
frame and object to object. The reference (``tests/pruning_reference.py``) is
stock SAM2 with full-grid memory and attention masks; the fast path gathers
tokens, RoPE frequencies and positional encodings by index and stores only the
kept memory tokens.

Tolerances: fp32 values (mask logits, object pointers) within 2e-5 absolute;
bf16 memory features within one bf16 rounding step (2^-7 relative, in under 1%
of the elements) of each other,
since values that differ by float reassociation can round to neighbouring bf16
numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastsam2.tracking.memory_bank import INDICES_KEY, windows
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET
from helpers import tiny_sam2, track_from_frame0, write_disc_video
from pruning_reference import FixedRouter, ReferencePrunedPredictor, random_kept_fn

#: Shrunk windows (config overrides): mask window 4 frames, pointer window 6 frames.
WINDOW_OVERRIDES = ["++model.num_maskmem=4", "++model.max_obj_ptrs_in_encoder=6"]
NUM_FRAMES = 9  # frame 8 reads memories of 5..7 (+0) and pointers of 3..7 (+0): both windows full and moving
GRID = 16 * 16  # 256 px
FP32_ATOL = 2e-5
REFERENCE_TARGET = "pruning_reference.ReferencePrunedPredictor"


def _track(predictor, video: Path) -> tuple[dict, dict[int, torch.Tensor]]:
    return track_from_frame0(predictor, video, clicks={1: [[48, 60]]}, boxes={2: [100, 10, 150, 50]})


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_disc_video(tmp_path_factory.mktemp("reference") / "video", NUM_FRAMES)


@pytest.fixture(scope="module")
def predictors():
    fast, ref = tiny_sam2(PREDICTOR_TARGET, WINDOW_OVERRIDES), tiny_sam2(REFERENCE_TARGET, WINDOW_OVERRIDES)
    assert isinstance(ref, ReferencePrunedPredictor)
    assert all(torch.equal(a, b) for a, b in zip(fast.state_dict().values(), ref.state_dict().values(),
                                                  strict=True))
    assert (fast.num_maskmem, fast.max_obj_ptrs_in_encoder) == (ref.num_maskmem, ref.max_obj_ptrs_in_encoder) == (4, 6)
    mask_window, ptr_window = windows(fast)
    assert NUM_FRAMES > ptr_window + 2 > mask_window + 2  # both windows fill, then slide
    return fast, ref


def _close_bf16(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to one bf16 rounding step (2^-7 relative), and equal in almost every element."""
    a, b = a.float(), b.float()
    within_one_step = bool(((a - b).abs() <= 2**-7 * torch.maximum(a.abs(), b.abs()) + 1e-6).all())
    return within_one_step and (a != b).float().mean().item() < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("keep", [0.3, 0.1])
def test_fast_pruned_path_equals_dense_masked_reference(predictors, video, keep):
    fast, ref = predictors
    kept_fn = random_kept_fn(GRID, keep, seed=int(keep * 100))
    assert not torch.equal(kept_fn(5, 0), kept_fn(6, 0)) and not torch.equal(kept_fn(5, 0), kept_fn(5, 1))
    fast.configure_pruning(keep_ratio=keep, router=FixedRouter(kept_fn))
    ref.kept_fn = kept_fn

    fast_state, fast_masks = _track(fast, video)
    ref_state, ref_masks = _track(ref, video)

    assert fast_masks.keys() == ref_masks.keys() == set(range(NUM_FRAMES))
    worst = max((fast_masks[f] - ref_masks[f]).abs().max().item() for f in fast_masks)
    assert worst <= FP32_ATOL * 10, f"video-res mask logits differ by {worst}"
    for f in fast_masks:
        assert torch.equal(fast_masks[f] > 0, ref_masks[f] > 0), f"binary masks differ on frame {f}"

    k = round(keep * GRID)
    for obj in (0, 1):
        fo, ro = fast_state["output_dict_per_obj"][obj], ref_state["output_dict_per_obj"][obj]
        for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
            assert fo[key].keys() == ro[key].keys()
            for t in fo[key]:
                x, y = fo[key][t], ro[key][t]
                kept = kept_fn(t, obj)
                # The fast bank holds exactly the decided tokens ...
                assert torch.equal(x[INDICES_KEY].long(), kept), (obj, t)
                assert x["maskmem_features"].shape == (1, 64, k)
                # ... and their features are the reference's full-grid features at those positions.
                ref_feats = y["maskmem_features"].flatten(2)[..., kept]
                assert _close_bf16(x["maskmem_features"], ref_feats), (obj, t)
                torch.testing.assert_close(x["pred_masks"], y["pred_masks"], atol=FP32_ATOL, rtol=0)
                torch.testing.assert_close(x["obj_ptr"], y["obj_ptr"], atol=FP32_ATOL, rtol=0)
