"""The pruned predictor through the stock API: stored memory, stats, multi-object, text."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fastsam2.models.factory import load_clip
from fastsam2.schema import COMPONENTS
from fastsam2.tracking.memory_bank import INDICES_KEY, memory_bank_bytes, memory_bank_stats
from fastsam2.tracking.pruned_predictor import (
    PREDICTOR_TARGET,
    ROUTER_CACHE_KEY,
    STATS_KEY,
    PrunedSAM2VideoPredictor,
)
from fastsam2.tracking.router import Router, RouterConfig
from fastsam2.tracking.signals import ClipDenseSimilarity
from helpers import tiny_sam2, write_disc_video

GRID_TOKENS = 16 * 16  # image_size 256
NUM_FRAMES = 4


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_disc_video(tmp_path_factory.mktemp("pruned") / "video", NUM_FRAMES)


@pytest.fixture(scope="module")
def predictor() -> PrunedSAM2VideoPredictor:
    p = tiny_sam2(PREDICTOR_TARGET)
    assert isinstance(p, PrunedSAM2VideoPredictor)
    return p


@pytest.fixture(scope="module")
def tiny_clip() -> ClipDenseSimilarity:
    return ClipDenseSimilarity(load_clip("fastsam2-tiny", random_weights=True))


def test_keep_point_three_stores_only_kept_tokens(predictor, video):
    predictor.configure_pruning(keep_ratio=0.3)  # default router: no text, prior + uncertainty + context
    state = predictor.init_state(str(video))
    predictor.set_video_text(state, None)
    predictor.add_new_points_or_box(state, 0, 1, points=[[48, 60]], labels=[1])
    frames = [f for f, _, _ in predictor.propagate_in_video(state)]
    assert frames == list(range(NUM_FRAMES))

    k = round(0.3 * GRID_TOKENS)
    out = state["output_dict_per_obj"][0]
    stored = {**out["cond_frame_outputs"], **out["non_cond_frame_outputs"]}
    assert set(stored) == set(range(NUM_FRAMES))
    for t, o in stored.items():
        idx = o[INDICES_KEY]
        assert idx.dtype == torch.int16 and idx.shape == (k,), t
        assert torch.all(idx[1:] > idx[:-1])  # sorted, unique
        assert o["maskmem_features"].shape == (1, 64, k) and o["maskmem_features"].dtype == torch.bfloat16

    stats = state[STATS_KEY]
    for f in range(1, NUM_FRAMES):
        s = stats[f]
        assert all(s[f"ms_{c}"] > 0 for c in COMPONENTS), s
        assert s["tokens_kept"] == k and s["tokens_total"] == GRID_TOKENS
    assert "uncertainty" in state[ROUTER_CACHE_KEY]

    bank = memory_bank_stats(state)
    dense_per_frame = 64 * GRID_TOKENS * 2 + 256 * 4
    assert bank["bank_bytes_per_frame"] == pytest.approx(64 * k * 2 + k * 2 + 256 * 4)
    # 0.33x here; the 1 KiB object pointer weighs less at 1024 (0.31x there).
    assert bank["bank_bytes_per_frame"] < 0.34 * dense_per_frame
    assert memory_bank_bytes(state) == bank["bank_bytes"] + bank["mask_bytes"]

    # Memory lives in the per-frame dicts: evicting a frame's dict evicts its memory.
    before = memory_bank_bytes(state, include_masks=False)
    out["non_cond_frame_outputs"].pop(1)
    assert memory_bank_bytes(state, include_masks=False) == before - (64 * k * 2 + k * 2 + 256 * 4)


def test_two_objects_with_text_and_eviction(predictor, video, tiny_clip):
    router = Router(RouterConfig(semantic="clip", keyframe_interval=2), clip=tiny_clip)
    predictor.configure_pruning(keep_ratio=0.5, router=router)
    state = predictor.init_state(str(video))
    predictor.set_video_text(state, "a red ball")
    predictor.add_new_points_or_box(state, 0, 1, points=[[48, 60]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[100, 10, 150, 50])
    for f, obj_ids, masks in predictor.propagate_in_video(state):
        assert obj_ids == [1, 2] and masks.shape == (2, 1, 120, 160)
        # What the streaming actor does: drop outputs outside the memory window.
        for o in state["output_dict_per_obj"].values():
            o["non_cond_frame_outputs"].pop(f - 2, None)
    stats = state[STATS_KEY]
    k = round(0.5 * GRID_TOKENS)
    assert stats[NUM_FRAMES - 1]["tokens_kept"] == 2 * k
    assert stats[NUM_FRAMES - 1]["tokens_total"] == 2 * GRID_TOKENS
    assert state[ROUTER_CACHE_KEY]["keyframes"] >= 2  # recomputed on keyframes, reused between


def test_paper_mode_and_mc_uncertainty_run(predictor, video):
    router = Router(RouterConfig(semantic="paper", uncertainty="mc", mc_passes=2))
    predictor.configure_pruning(keep_ratio=0.2, router=router)
    state = predictor.init_state(str(video))
    predictor.set_video_text(state, "anything")
    predictor.add_new_points_or_box(state, 0, 1, points=[[48, 60]], labels=[1])
    n = sum(1 for _ in predictor.propagate_in_video(state, max_frame_num_to_track=2))
    assert n == 3
    unc = state[ROUTER_CACHE_KEY]["uncertainty"]
    (u,) = unc.values()
    assert u.shape == (1, GRID_TOKENS) and torch.isfinite(u).all() and u.max() > 0


def test_configure_rejects_bad_keep_ratio(predictor):
    with pytest.raises(ValueError):
        predictor.configure_pruning(keep_ratio=0.0)
    with pytest.raises(ValueError):
        predictor.configure_pruning(keep_ratio=1.5)
