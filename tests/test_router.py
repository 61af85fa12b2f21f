"""Router pieces: token selection, prior, signals (text dependence, uncertainty), MLP I/O."""

from __future__ import annotations

import pytest
import torch
from sam2.modeling.backbones.hieradet import Hiera

from fastsam2.models.factory import load_clip
from fastsam2.tracking.router import Router, RouterConfig, RouterMLP, build_router, select_tokens
from fastsam2.tracking.signals import (
    ClipDenseSimilarity,
    capture_encoder_taps,
    closed_form_uncertainty,
    mc_dropout_uncertainty,
    paper_lsq_relevance,
    prior_from_masks,
)


@pytest.fixture(scope="module")
def tiny_clip() -> ClipDenseSimilarity:
    return ClipDenseSimilarity(load_clip("fastsam2-tiny", random_weights=True))


def test_select_keeps_prior_and_spreads_background():
    g = torch.Generator().manual_seed(0)
    n, k = 256, 64
    scores = torch.rand(n, generator=g)
    prior = torch.zeros(n, dtype=torch.bool)
    prior[:20] = True  # top rows of a 16x16 grid
    kept = select_tokens(scores, prior, k, background_fraction=0.25)
    assert kept.numel() == k and torch.equal(kept, kept.unique())
    assert prior[kept].sum() == 20  # every prior token kept
    rest = kept[~prior[kept]]
    rows = (rest // 16).unique()
    assert rows.numel() >= 10  # background spread over the frame, not clustered


def test_select_holds_budget_when_prior_is_larger():
    scores = torch.arange(100, dtype=torch.float32)
    prior = torch.ones(100, dtype=torch.bool)
    kept = select_tokens(scores, prior, 30, background_fraction=0.0)
    assert kept.numel() == 30 and kept.min() == 70  # best-scored prior tokens
    assert torch.equal(select_tokens(scores, None, 100), torch.arange(100))


def test_prior_from_masks_dilates_on_token_grid():
    logits = torch.full((1, 1, 64, 64), -5.0)
    logits[..., 32:36, 32:36] = 5.0  # exactly token (8, 8) of a 16x16 grid at 4 px/token
    p = prior_from_masks(logits, (16, 16), dilation=1).view(16, 16)
    assert p.sum() == 9 and p[7:10, 7:10].all()
    assert prior_from_masks(logits, (16, 16), dilation=0).sum() == 1


def test_paper_mode_ignores_text_direction_clip_does_not(tiny_clip):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, 64, 32, generator=g)
    e1 = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    e2 = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    assert torch.allclose(paper_lsq_relevance(tokens, e1), paper_lsq_relevance(tokens, e2), atol=1e-5)

    image = torch.randn(1, 3, 128, 128, generator=g)
    a = tiny_clip.similarity(image, "a red ball", (8, 8))
    b = tiny_clip.similarity(image, "a dog on a skateboard", (8, 8))
    assert a.shape == (1, 64)
    assert not torch.allclose(a, b)


@pytest.fixture(scope="module")
def trunk() -> Hiera:
    torch.manual_seed(0)
    return Hiera(embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9],
                 window_pos_embed_bkg_spatial_size=[7, 7]).eval()


def test_closed_form_matches_sampled_mc_dropout(trunk):
    """For one block the closed form is the exact variance; MC must agree."""
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture_encoder_taps(trunk, [4], hidden=True, block_input=True) as taps:
        trunk(x)
    grid = (8, 8)
    exact = closed_form_uncertainty(taps, trunk, [4], 0.1, grid)
    mc = mc_dropout_uncertainty(trunk, taps.block_input, [4], 200, 0.1, grid, torch.Generator().manual_seed(0))
    corr = torch.corrcoef(torch.stack([exact[0], mc[0]]))[0, 1]
    assert corr > 0.9
    assert mc.mean() / exact.mean() == pytest.approx(1.0, abs=0.15)
    # Blocks 3-5 (the default) run end to end.
    with torch.no_grad(), capture_encoder_taps(trunk, [3, 4, 5], block_input=True) as taps:
        trunk(x)
    u = mc_dropout_uncertainty(trunk, taps.block_input, [3, 4, 5], 5, 0.1, grid)
    assert u.shape == (1, 64) and (u > 0).all()


def test_router_works_without_text(tiny_clip):
    router = Router(RouterConfig(semantic="clip"), clip=tiny_clip)
    tokens = torch.randn(1, 64, 32)
    sem = router.semantic_map({}, 0, 0, tokens, None, lambda: torch.randn(1, 3, 64, 64), (8, 8), None)
    assert sem is None
    scores = router.score(tokens, None, torch.rand(1, 64), None)
    assert scores.shape == (1, 64)
    assert router.select(scores, None, 16).numel() == 16
    with pytest.raises(ValueError):
        Router(RouterConfig(semantic="clip"))  # no CLIP model given


def test_semantic_map_reused_between_keyframes(tiny_clip):
    """Per object: CLIP runs on a region around the prior, again only when the prior leaves
    that region or ``keyframe_interval`` frames have passed."""
    router = Router(RouterConfig(semantic="clip", keyframe_interval=5), clip=tiny_clip)
    cache: dict = {}
    calls = []

    def image():
        calls.append(1)
        return torch.randn(1, 3, 128, 128)

    grid = (16, 16)
    tokens = torch.randn(1, 256, 32)

    def prior_at(row: int, col: int) -> torch.Tensor:
        p = torch.zeros(1, 16, 16, dtype=torch.bool)
        p[0, row:row + 3, col:col + 3] = True
        return p.flatten(1)

    maps = [router.semantic_map(cache, t, 0, tokens, "a cat", image, grid, prior_at(2, 2 + (t > 2)))
            for t in range(4)]
    assert len(calls) == 1  # the object moved one token: still inside the scored region
    assert all(m is maps[0] for m in maps)
    box = cache["semantic"][0]["box"]
    assert box is not None and (box[2] - box[0]) == 8  # half the frame's side (crop_min_fraction)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[box[0]:box[2], box[1]:box[3]] = True
    outside = maps[0].view(16, 16)[~inside]
    assert torch.all(outside == maps[0].view(16, 16)[inside].min())  # ranks last outside the region
    router.semantic_map(cache, 4, 0, tokens, "a cat", image, grid, prior_at(12, 12))  # left the region
    assert len(calls) == 2
    router.semantic_map(cache, 4, 1, tokens, "a cat", image, grid, prior_at(12, 12))  # another object
    assert len(calls) == 3
    for t in range(5, 9):
        router.semantic_map(cache, t, 0, tokens, "a cat", image, grid, prior_at(12, 12))
    assert len(calls) == 3 and cache["keyframes"] == 3
    router.semantic_map(cache, 9, 0, tokens, "a cat", image, grid, prior_at(12, 12))  # interval elapsed
    assert len(calls) == 4

    whole = Router(RouterConfig(semantic="clip", keyframe_interval=3, semantic_crop=False), clip=tiny_clip)
    cache, calls[:] = {}, []
    for t in range(6):
        whole.semantic_map(cache, t, 0, tokens, "a cat", image, grid, prior_at(2, 2))
    assert len(calls) == 2 and cache["semantic"][0]["box"] is None  # frames 0 and 3
    whole.semantic_map(cache, 6, 0, tokens, "a cat", image, grid, prior_at(12, 12))  # mask moved: new keyframe
    assert len(calls) == 3


def test_cropped_relevance_depends_on_text_and_runs_at_lower_resolution(tiny_clip):
    image = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    box = (0, 0, 8, 8)  # a quarter of a 16x16 grid
    assert tiny_clip.crop_input_size(8, 16) == 64  # half of 7 patches per side, rounded: 4 patches
    a = tiny_clip.similarity(image, "a red ball", (16, 16), box)
    b = tiny_clip.similarity(image, "a dog on a skateboard", (16, 16), box)
    assert a.shape == (1, 256) and not torch.allclose(a, b)
    whole = tiny_clip.similarity(image, "a red ball", (16, 16))
    assert not torch.allclose(a.view(16, 16)[:8, :8], whole.view(16, 16)[:8, :8])  # really the crop


def test_mlp_router_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    router = Router(RouterConfig(semantic="none", uncertainty="closed_form"), mlp=RouterMLP(32))
    path = tmp_path / "router.pt"
    router.save(path, sam2_config="sam2.1_hiera_t", image_size=256, clip_model=None)
    loaded = build_router(router_weights=path)
    assert loaded.mlp is not None and loaded.meta["sam2_config"] == "sam2.1_hiera_t"
    tokens, unc = torch.randn(2, 64, 32), torch.rand(2, 64)
    assert torch.equal(router.score(tokens, None, unc, None), loaded.score(tokens, None, unc, None))
    assert router.mlp.fc1.in_features == 3 * 32 and router.mlp.fc1.out_features == 256


def test_flop_counter_sees_clip_attention(tiny_clip):
    """CLIP's ``nn.MultiheadAttention`` runs a fused fast path at inference that torch's
    FLOP counter has no formula for; ours turns it off while counting, so the count
    equals the analytic cost of the ViT blocks (projections, attention, MLP)."""
    from torch.utils.flop_counter import FlopCounterMode

    from fastsam2.tracking.instrument import flop_counter

    visual = tiny_clip.clip.model.visual
    n, w = 1 + visual.grid_size[0] * visual.grid_size[1], visual.transformer.width
    blocks = len(visual.transformer.resblocks)
    analytic = blocks * (2 * n * w * 3 * w + 2 * 2 * n * n * w + 2 * n * w * w + 2 * 2 * n * w * 4 * w)
    x = torch.randn(1, n, w)
    with torch.inference_mode():
        counter = flop_counter()
        with counter:
            visual.transformer(x)
        plain = FlopCounterMode(display=False)
        with plain:
            visual.transformer(x)
    assert counter.get_total_flops() == analytic
    assert plain.get_total_flops() < 0.8 * analytic  # what the stock counter sees: the MLPs only
    assert torch.backends.mha.get_fastpath_enabled()  # restored after counting
