"""Each router signal's contract, checked at predictor level (random SAM2.1 hiera-t, 256 px).

Every test here fails when its signal is broken inside the predictor, not only in
the signal's own function: the dilated previous mask reaches the selection and is
kept; the text changes what is kept; uncertainty comes from the blocks the config
names; the fused scores decide what is kept; eviction never drops what a later
frame reads. Windows are shrunk through the model config (``num_maskmem=3``,
``max_obj_ptrs_in_encoder=6``) so a 10-frame video outlives both.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastsam2.models.factory import load_clip
from fastsam2.tracking.memory_bank import INDICES_KEY, evict_unreachable, windows
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET, ROUTER_CACHE_KEY, PrunedSAM2VideoPredictor
from fastsam2.tracking.router import Router, RouterConfig
from fastsam2.tracking.signals import ClipDenseSimilarity, prior_from_masks
from helpers import tiny_sam2, write_disc_video

NUM_FRAMES = 7
GRID = (16, 16)
N = GRID[0] * GRID[1]
WINDOW_OVERRIDES = ["++model.num_maskmem=2", "++model.max_obj_ptrs_in_encoder=4"]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_disc_video(tmp_path_factory.mktemp("contracts") / "video", NUM_FRAMES)


@pytest.fixture(scope="module")
def predictor() -> PrunedSAM2VideoPredictor:
    p = tiny_sam2(PREDICTOR_TARGET, WINDOW_OVERRIDES)
    mask_window, ptr_window = windows(p)
    assert (mask_window, ptr_window) == (2, 4) and NUM_FRAMES > ptr_window + 2
    return p


@pytest.fixture(scope="module")
def tiny_clip() -> ClipDenseSimilarity:
    return ClipDenseSimilarity(load_clip("fastsam2-tiny", random_weights=True))


def disc_mask() -> torch.Tensor:
    """The disc of ``write_disc_video`` on frame 0 (160x120): a mask prompt that SAM2 uses as
    frame 0's output, so frame 1's prior is a real object however random the weights are."""
    yy, xx = torch.meshgrid(torch.arange(120), torch.arange(160), indexing="ij")
    return (xx - 48) ** 2 + (yy - 60) ** 2 < 18**2


def track(predictor, video: Path, keep: float, router: Router | None, text: str | None = None,
          frames: int | None = None, bounded: bool = False, mask_prompt: bool = False):
    """Prompt one object (a click, or the disc's mask); return the state and the video-res
    mask logits per frame."""
    predictor.configure_pruning(keep_ratio=keep, router=router)
    state = predictor.init_state(str(video))
    predictor.set_video_text(state, text)
    if mask_prompt:
        predictor.add_new_mask(state, 0, 1, disc_mask())
    else:
        predictor.add_new_points_or_box(state, 0, 1, points=[[48, 60]], labels=[1])
    masks = {}
    for f, _, m in predictor.propagate_in_video(state, max_frame_num_to_track=frames):
        masks[f] = m.clone()
        if bounded:
            evict_unreachable(predictor, state, f)
    return state, masks


def kept_sets(state) -> dict[int, torch.Tensor]:
    out = state["output_dict_per_obj"][0]
    return {t: o[INDICES_KEY].long() for d in (out["cond_frame_outputs"], out["non_cond_frame_outputs"])
            for t, o in d.items()}


class RecordingRouter(Router):
    """The real router, recording what the predictor hands to its selection step."""

    def __init__(self, predictor: PrunedSAM2VideoPredictor, config: RouterConfig, **kw) -> None:
        super().__init__(config, **kw)
        self.predictor = predictor
        self.calls: dict[int, tuple[torch.Tensor | None, int, torch.Tensor]] = {}

    def select(self, scores, prior, k):
        kept = super().select(scores, prior, k)
        frame = self.predictor._ctx.frame_idx
        self.calls[frame] = (None if prior is None else prior.clone(), k, kept)
        return kept


# ---- temporal prior ------------------------------------------------------------------------
@pytest.mark.parametrize("dilation", [1, 2])
def test_dilated_previous_mask_reaches_selection_and_is_kept(predictor, video, dilation):
    cfg = RouterConfig(semantic="none", prior_dilation=dilation, background_fraction=0.1)
    router = RecordingRouter(predictor, cfg)
    frames = 4
    state, _ = track(predictor, video, 0.6, router, frames=frames - 1, mask_prompt=True)
    out = state["output_dict_per_obj"][0]
    stored = {**out["cond_frame_outputs"], **out["non_cond_frame_outputs"]}
    informative = 0
    for t in range(1, frames):
        expected = prior_from_masks(stored[t - 1]["pred_masks"], GRID, dilation)  # [1, N]
        prior, k, kept = router.calls[t]
        assert prior is not None, f"frame {t}: no prior reached the selection"
        assert torch.equal(prior, expected), f"frame {t}: prior is not frame {t - 1}'s mask dilated by {dilation}"
        n_prior, share = int(expected.sum()), k - round(cfg.background_fraction * k)
        in_kept = int(expected[0, kept].sum())
        # The contract: every prior token while they fit in the budget minus the background
        # share, else that many of them (the best-scored).
        assert in_kept == n_prior if n_prior <= share else in_kept >= share, (t, n_prior, share, in_kept)
        undilated = prior_from_masks(stored[t - 1]["pred_masks"], GRID, 0)
        informative += int(0 < n_prior <= share and not torch.equal(undilated, expected))
    assert informative >= 1, "no frame where the dilated prior is testable"


def test_dilation_radius_changes_what_is_kept(predictor, video):
    def kept(dilation):
        state, _ = track(predictor, video, 0.3, Router(RouterConfig(semantic="none", prior_dilation=dilation)),
                         frames=1, mask_prompt=True)
        return kept_sets(state)

    a, b = kept(0), kept(3)
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


# ---- text relevance ------------------------------------------------------------------------
def test_text_alone_changes_the_kept_set(predictor, video, tiny_clip):
    def run(text):
        cfg = RouterConfig(semantic="clip", uncertainty="none", w_semantic=1.0, w_context=0.2)
        state, masks = track(predictor, video, 0.3, Router(cfg, clip=tiny_clip), text=text, frames=2)
        assert state[ROUTER_CACHE_KEY]["keyframes"] >= 1
        return kept_sets(state), masks

    ball, ball_masks = run("a red ball")
    again, again_masks = run("a red ball")
    dog, _ = run("a dog on a skateboard")
    assert all(torch.equal(ball[t], again[t]) for t in ball)  # deterministic ...
    assert all(torch.equal(ball_masks[t], again_masks[t]) for t in ball_masks)
    changed = [t for t in range(1, 3) if not torch.equal(ball[t], dog[t])]
    assert changed, "changing only the text did not change any kept set"


# ---- uncertainty ---------------------------------------------------------------------------
def _closed_form_reference(trunk, image: torch.Tensor, blocks, p: float) -> torch.Tensor:
    """Dropout variance of each named block's MLP output, written out: p/(1-p) mean_j sum_i W2[j,i]^2 a_i^2."""
    hidden = {}
    hooks = [trunk.blocks[b].mlp.layers[-1].register_forward_pre_hook(
        lambda _m, args, b=b: hidden.__setitem__(b, args[0].detach())) for b in blocks]
    try:
        with torch.inference_mode():
            trunk(image)
    finally:
        for h in hooks:
            h.remove()
    total = 0
    for b in blocks:
        w2 = trunk.blocks[b].mlp.layers[-1].weight.float()
        var = torch.einsum("bhwi,ji->bhwj", hidden[b].float().pow(2), w2.pow(2)).mean(-1) * p / (1 - p)
        total = total + F.adaptive_avg_pool2d(var.unsqueeze(1), GRID).flatten(1)
    return total


def test_uncertainty_comes_from_the_configured_blocks(predictor, video):
    blocks = (4, 8)  # not the default 3-5; both at the 16x16 stage
    cfg = RouterConfig(semantic="none", uncertainty="closed_form", uncertainty_blocks=blocks, dropout_p=0.2)
    state, _ = track(predictor, video, 0.3, Router(cfg), frames=2)
    (frame, unc), = state[ROUTER_CACHE_KEY]["uncertainty"].items()
    image = state["images"][frame].unsqueeze(0).float()
    expected = _closed_form_reference(predictor.image_encoder.trunk, image, blocks, 0.2)
    torch.testing.assert_close(unc, expected, rtol=1e-4, atol=1e-6)
    default = _closed_form_reference(predictor.image_encoder.trunk, image, (3, 4, 5), 0.2)
    assert not torch.allclose(unc, default, rtol=1e-2)  # the test can tell the blocks apart


# ---- fused scores ---------------------------------------------------------------------------
class ConstantScores(Router):
    def score(self, tokens, semantic, uncertainty, prior):
        return torch.zeros(tokens.shape[:2])


class RandomScores(Router):
    def score(self, tokens, semantic, uncertainty, prior):
        return torch.rand(tokens.shape[:2], generator=torch.Generator().manual_seed(tokens.shape[1]))


def test_scores_decide_what_is_kept_with_other_signals_fixed(predictor, video):
    cfg = RouterConfig(semantic="none", uncertainty="closed_form")
    runs = {name: track(predictor, video, 0.3, cls(cfg), frames=2)
            for name, cls in (("fused", Router), ("constant", ConstantScores), ("random", RandomScores))}
    kept = {name: kept_sets(state) for name, (state, _) in runs.items()}
    for other in ("constant", "random"):
        assert any(not torch.equal(kept["fused"][t], kept[other][t]) for t in range(1, 3)), other
        assert any(not torch.equal(runs["fused"][1][t], runs[other][1][t]) for t in range(1, 3)), other


# ---- eviction --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("keep", [1.0, 0.3])
def test_eviction_never_drops_what_a_later_frame_reads(predictor, video, keep):
    router = Router(RouterConfig(semantic="none")) if keep < 1.0 else None
    full_state, full = track(predictor, video, keep, router)
    bounded_state, bounded = track(predictor, video, keep, router, bounded=True)
    held = len(bounded_state["output_dict_per_obj"][0]["non_cond_frame_outputs"])
    assert held < len(full_state["output_dict_per_obj"][0]["non_cond_frame_outputs"])  # eviction happened
    assert full.keys() == bounded.keys() == set(range(NUM_FRAMES))
    for f in full:
        assert torch.equal(full[f], bounded[f]), f"frame {f}: eviction changed the masks"
