"""Sparse image encoder: exact where nothing is skipped, exact reuse where it is, bounded.

Random-weight SAM2.1 hiera-t at 256 px (costs and exactness are real, masks are not).
"""

from __future__ import annotations

import pytest
import torch

from fastsam2.config import PruningConfig
from fastsam2.models.sam2 import build_video_predictor
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET, STATS_KEY
from fastsam2.tracking.sparse_encoder import (
    ENCODER_CACHE_KEY,
    EncoderCache,
    EncoderSparsityConfig,
    SparseHieraEncoder,
)
from helpers import write_disc_video

SIZE = 256


@pytest.fixture(scope="module")
def predictor():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return build_video_predictor("sam2.1_hiera_t", image_size=SIZE, device="cpu", random_weights=True,
                                 predictor_target=PREDICTOR_TARGET)


def frames(n: int, seed: int = 0) -> list[torch.Tensor]:
    """A textured static background with a bright square moving right by 16 px a frame."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(SIZE, SIZE), mode="bicubic")
    out = []
    for t in range(n):
        im = bg.clone()
        im[..., 96:144, 32 + 16 * t: 80 + 16 * t] = 2.0
        out.append(im)
    return out


def stock(predictor, im):
    with torch.no_grad():
        return predictor.image_encoder(im)


def assert_same(a: dict, b: dict) -> None:
    for x, y in zip(a["backbone_fpn"], b["backbone_fpn"], strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a["vision_pos_enc"], b["vision_pos_enc"], strict=True):
        assert torch.equal(x, y)
    assert torch.equal(a["vision_features"], b["vision_features"])


@pytest.mark.parametrize("mode,threshold,refresh", [("both", 0.0, 8), ("both", 0.5, 1)])
def test_exact_settings_are_the_stock_encoder(predictor, mode, threshold, refresh):
    enc = SparseHieraEncoder(predictor.image_encoder, EncoderSparsityConfig(mode, refresh, threshold))
    cache = EncoderCache()
    prior = torch.zeros(16, 16, dtype=torch.bool)
    prior[:4, :4] = True
    for im in frames(2):  # the second frame would be sparse under any other setting
        out, _, stats = enc.encode(im, cache, prior, tap_blocks=(3, 4, 5))
        assert stats.full
        assert_same(out, stock(predictor, im))


def test_sparse_frames_skip_and_approximate(predictor):
    """A sanity check that the exact test above is not vacuous: with a real threshold the
    same frames are encoded sparsely, close to but not equal to the stock encoder."""
    enc = SparseHieraEncoder(predictor.image_encoder, EncoderSparsityConfig("temporal", 8, 0.05))
    cache = EncoderCache()
    ims = frames(3)
    enc.encode(ims[0], cache)
    out, _, stats = enc.encode(ims[1], cache)
    ref = stock(predictor, ims[1])
    assert not stats.full and 0.0 < stats.recompute_fraction < 0.6
    cos = torch.nn.functional.cosine_similarity(out["vision_features"], ref["vision_features"], dim=1)
    assert float(cos.mean()) > 0.99
    assert not torch.equal(out["vision_features"], ref["vision_features"])
    # an unchanged frame recomputes nothing and returns the cached features
    again, _, st2 = enc.encode(ims[1], cache)
    assert st2.tokens_recomputed == 0
    assert torch.equal(again["vision_features"], out["vision_features"])


def _window_mask(select: torch.Tensor, ws: int, out_hw: tuple[int, int], ws_out: int) -> torch.Tensor:
    """Output tokens of the windows that contain a selected input token."""
    H, W = select.shape
    nh, nw = -(-H // ws), -(-W // ws)
    pad = torch.zeros(nh * ws, nw * ws, dtype=torch.bool)
    pad[:H, :W] = select
    win = pad.view(nh, ws, nw, ws).any(3).any(1)
    return win.repeat_interleave(ws_out, 0).repeat_interleave(ws_out, 1)[: out_hw[0], : out_hw[1]]


@pytest.mark.parametrize("block", [0, 1, 4, 5, 10])  # windowed, pooling, window 14 (padded), global, both
def test_fixed_skip_set_reuses_cache_and_recomputes_the_rest(predictor, block):
    enc = SparseHieraEncoder(predictor.image_encoder, EncoderSparsityConfig("temporal", 8, 0.1))
    cache = EncoderCache()
    ims = frames(2)
    enc.encode(ims[0], cache)  # full frame: caches frame 0
    blk = predictor.image_encoder.trunk.blocks[block]
    bc = cache.blocks[block]
    cached = bc.y.clone()
    x_new = bc.x_ref + 0.5 * torch.randn(bc.x_ref.shape, generator=torch.Generator().manual_seed(1))
    H, W = x_new.shape[1:3]
    select = torch.zeros(H, W, dtype=torch.bool)
    select[1, W - 1] = True  # asymmetric positions: rows and columns must not be swapped
    select[H // 4, 3 * W // 4] = True
    n, rewritten = enc.recompute_block(block, x_new, cache, select)
    with torch.no_grad():
        full = blk(x_new)
    Ho, Wo = full.shape[1:3]
    if blk.window_size > 0:
        ws_out = blk.window_size // blk.q_stride[0] if blk.q_stride else blk.window_size
        redo = _window_mask(select, blk.window_size, (Ho, Wo), ws_out)
    else:
        redo = select
    assert torch.equal(rewritten, redo) and n == int(redo.sum()) and 0 < n < Ho * Wo
    got = bc.y[0, :Ho, :Wo]
    assert torch.equal(got[~redo], cached[0, :Ho, :Wo][~redo])  # skipped: exactly the cache
    torch.testing.assert_close(got[redo], full[0][redo], atol=1e-5, rtol=1e-5)  # the rest: full recompute
    assert not torch.allclose(got[redo], cached[0, :Ho, :Wo][redo])
    # the recomputed tokens' reference inputs are now this frame's, the others' unchanged
    if blk.window_size > 0:
        redo_in = _window_mask(select, blk.window_size, (H, W), blk.window_size)
    else:
        redo_in = select
    assert torch.equal(bc.x_ref[0][redo_in], x_new[0][redo_in])
    assert not torch.equal(bc.x_ref[0][~redo_in], x_new[0][~redo_in])


def test_cache_does_not_grow_with_video_length(predictor):
    enc = SparseHieraEncoder(predictor.image_encoder, EncoderSparsityConfig("both", 3, 0.05))
    cache = EncoderCache()
    prior = torch.zeros(16, 16, dtype=torch.bool)
    prior[5:9, 2:6] = True
    sizes, kinds = [], []
    for im in frames(7):
        _, _, stats = enc.encode(im, cache, prior, tap_blocks=(3, 4, 5))
        sizes.append(cache.nbytes())
        kinds.append(stats.reason)
    assert kinds == ["first", "sparse", "sparse", "refresh", "sparse", "sparse", "refresh"]
    assert len(set(sizes)) == 1 and len(cache.blocks) == len(predictor.image_encoder.trunk.blocks)


def test_scene_cut_triggers_a_full_recompute(predictor):
    enc = SparseHieraEncoder(predictor.image_encoder, EncoderSparsityConfig("temporal", 100, 0.05))
    cache = EncoderCache()
    ims = frames(2)
    enc.encode(ims[0], cache)
    _, _, s1 = enc.encode(ims[1], cache)
    assert not s1.full
    cut = frames(1, seed=7)[0]
    out, _, s2 = enc.encode(cut, cache)
    assert s2.full and s2.reason == "scene_cut" and s2.changed_fraction >= 0.5
    assert_same(out, stock(predictor, cut))


def test_object_mode_recomputes_near_objects_only(predictor):
    enc = SparseHieraEncoder(predictor.image_encoder, EncoderSparsityConfig("object", 100, 0.05))
    cache = EncoderCache()
    prior = torch.zeros(16, 16, dtype=torch.bool)
    prior[:3, :3] = True  # the object sits top-left; the change below happens elsewhere
    ims = frames(2)
    first, _, _ = enc.encode(ims[0], cache, prior)
    fine = first["backbone_fpn"][0].clone()
    out, _, stats = enc.encode(ims[1], cache, prior)
    assert not stats.full and 0 < stats.recompute_fraction < 0.5
    # the stride-4 level is window-local (block 0): the moved square, far from the prior, is not
    # updated (up to float noise: the neck's 1x1 conv sees the cached tensor in another memory layout)
    region = (..., slice(24, 36), slice(8, 30))
    torch.testing.assert_close(out["backbone_fpn"][0][region], fine[region], atol=1e-5, rtol=0)
    assert (stock(predictor, ims[1])["backbone_fpn"][0][region] - fine[region]).abs().max() > 0.1
    _, _, no_prior = enc.encode(ims[1], cache, None)
    assert no_prior.full and no_prior.reason == "no_prior"


def test_config_validation():
    with pytest.raises(ValueError, match="encoder sparsity"):
        EncoderSparsityConfig("sometimes")
    with pytest.raises(ValueError, match="refresh"):
        EncoderSparsityConfig("both", refresh=0)
    with pytest.raises(ValueError, match="threshold"):
        EncoderSparsityConfig("both", threshold=-1)
    with pytest.raises(ValueError, match="encoder_refresh"):
        PruningConfig(encoder_refresh=0)
    with pytest.raises(ValueError):
        PruningConfig(encoder_sparsity="sometimes")
    from fastsam2.cli.options import build_config

    cfg = build_config(("a.mp4",), output="o", encoder_sparsity="both", encoder_refresh=4, encoder_threshold=0.2)
    assert (cfg.pruning.encoder_sparsity, cfg.pruning.encoder_refresh, cfg.pruning.encoder_threshold) == ("both", 4, 0.2)
    from fastsam2.tracking.factory import encoder_sparsity_config

    assert encoder_sparsity_config(cfg) == EncoderSparsityConfig("both", refresh=4, threshold=0.2)
    assert PruningConfig().encoder_sparsity == "off"


def _track(video, sparsity: EncoderSparsityConfig | None, keep: float, points):
    p = build_video_predictor("sam2.1_hiera_t", image_size=SIZE, device="cpu", random_weights=True,
                              predictor_target=PREDICTOR_TARGET)
    p.configure_pruning(keep_ratio=keep)
    p.configure_encoder_sparsity(sparsity)
    state = p.init_state(str(video))
    for obj_id, pt in enumerate(points, start=1):
        p.add_new_points_or_box(state, 0, obj_id, points=[pt], labels=[1])
    seen_cache, stats = [], {}
    masks = {}
    for f, _, m in p.propagate_in_video(state):
        masks[f] = m.clone()
        seen_cache.append(ENCODER_CACHE_KEY in state)
        stats[f] = dict(state[STATS_KEY].get(f, {}))
    return state, masks, stats, seen_cache


@pytest.mark.slow
def test_tracking_with_sparse_encoder(tmp_path):
    """Through the predictor: threshold 0 is stock bit for bit (one object); two objects with
    the pruned memory path run sparse frames and drop the cache when the video ends."""
    video = write_disc_video(tmp_path / "v", 3)
    _, dense, _, _ = _track(video, None, 1.0, [[48.0, 60.0]])
    state, exact, st, seen = _track(video, EncoderSparsityConfig("both", 8, 0.0), 1.0, [[48.0, 60.0]])
    assert all(torch.equal(dense[f], exact[f]) for f in dense)
    assert all(seen) and ENCODER_CACHE_KEY not in state

    # random-weight masks cover most of the frame, so "object" would recompute nearly all:
    # the temporal criterion shows sparse frames here (the disc moves over a static background)
    state, masks, stats, seen = _track(video, EncoderSparsityConfig("temporal", 8, 0.1), 0.3,
                                       [[48.0, 60.0], [120.0, 30.0]])
    assert sorted(masks) == [0, 1, 2] and all(m.shape[0] == 2 for m in masks.values())
    assert all(seen) and ENCODER_CACHE_KEY not in state
    sparse = [s for s in stats.values() if s.get("encoder_full") == 0]
    assert sparse, stats
    assert all(s["encoder_tokens_recomputed"] < s["encoder_tokens_total"] for s in sparse)


def test_object_prior_is_the_union_of_every_objects_last_mask(predictor):
    """Two objects' previous masks, dilated on the SAM grid (16 px tokens), then united."""
    grid = predictor.sam_image_embedding_size  # 16 at 256 px
    def out(y0, x0):
        logits = torch.full((1, 1, SIZE // 4, SIZE // 4), -5.0)
        logits[..., y0:y0 + 4, x0:x0 + 4] = 5.0  # one token of the SAM grid
        return {"cond_frame_outputs": {0: {"pred_masks": logits}}, "non_cond_frame_outputs": {}}
    state = {"output_dict_per_obj": {0: out(0, 0), 1: out(40, 40)}}
    prior = predictor._encoder_prior(state, 1)
    expected = torch.zeros(grid, grid, dtype=torch.bool)
    expected[:3, :3] = True  # token (0, 0) dilated by 2, clipped at the border
    expected[8:13, 8:13] = True  # token (10, 10) dilated by 2
    assert torch.equal(prior, expected)
    assert predictor._encoder_prior({"output_dict_per_obj": {}}, 1) is None
