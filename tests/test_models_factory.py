"""The model factory: one bundle shape for every loader, compact CLIP weights, CLIP built on first use.

Every model here has RANDOM weights (nothing can be downloaded on this machine).
"""

from __future__ import annotations

import logging

import pytest
import torch

from fastsam2.models.factory import ClipBundle, ModelBundle, load_clip, load_sam2, store_weights_as
from fastsam2.tracking.router import build_router
from fastsam2.tracking.signals import ClipDenseSimilarity

GRID = (8, 8)


def test_loaders_return_bundles_and_patch_nothing_onto_the_model():
    """SAM2 and CLIP here; the detector's and LLaVA's bundles are read by ``ProposalModel``
    (tests/test_detector.py) and the captioner (tests/test_caption_transformers.py)."""
    sam2 = load_sam2("sam2.1_hiera_t.yaml", image_size=128, device="cpu", random_weights=True)
    clip = load_clip("fastsam2-tiny", random_weights=True)
    assert all(isinstance(b, ModelBundle) and b.random_weights for b in (sam2, clip))
    assert (sam2.name, sam2.label, sam2.processor) == ("sam2.1_hiera_t", "sam2.1_hiera_t+random", None)
    assert isinstance(clip, ClipBundle) and clip.image_size == 112 and clip.processor is not None
    # What outputs record travels on the bundle, not on attributes patched onto the model.
    for attr in ("random_weights", "config_name"):
        assert not hasattr(sam2.model, attr)


def _param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_compact_clip_weights_halve_the_bytes_and_keep_the_relevance():
    fp32 = load_clip("fastsam2-tiny", random_weights=True)
    compact = load_clip("fastsam2-tiny", random_weights=True)
    store_weights_as(compact.model, torch.bfloat16)
    assert _param_bytes(compact.model) < 0.6 * _param_bytes(fp32.model)
    image = torch.randn(1, 3, 128, 128)
    ref = ClipDenseSimilarity(fp32).dense_features(ClipDenseSimilarity(fp32).to_clip_input(image))
    got = ClipDenseSimilarity(compact).dense_features(ClipDenseSimilarity(compact).to_clip_input(image))
    assert got.dtype == torch.float32  # fp32 arithmetic on bf16-stored weights
    assert torch.nn.functional.cosine_similarity(ref, got, dim=-1).min() > 0.999
    assert torch.nn.functional.cosine_similarity(
        ClipDenseSimilarity(fp32).text_embedding("a dog"), ClipDenseSimilarity(compact).text_embedding("a dog"), dim=0
    ) > 0.999


def test_clip_built_in_bf16_from_the_start_keeps_only_matrices_in_bf16():
    clip = load_clip("fastsam2-tiny", random_weights=True, weights_dtype=torch.bfloat16)
    stored = {n: p.dtype for n, p in clip.model.named_parameters()}
    big = [n for n in stored if "in_proj_weight" in n or "c_fc.weight" in n]
    small = [n for n in stored if n.endswith("ln_1.weight") or n.endswith("class_embedding")]
    assert big and all(stored[n] == torch.bfloat16 for n in big)
    assert small and all(stored[n] == torch.float32 for n in small)
    sim = ClipDenseSimilarity(clip).similarity(torch.randn(1, 3, 128, 128), "a dog", GRID)
    assert sim.shape == (1, 64) and torch.isfinite(sim).all()


def _semantic(router, text):
    image = torch.randn(1, 3, 128, 128)
    return router.semantic_map({}, 0, 1, torch.randn(1, 64, 32), text, lambda: image, GRID, None)


def test_router_builds_clip_on_the_first_phrase_only():
    router = build_router("clip", "none", clip_model="fastsam2-tiny", clip_random_weights=True)
    assert not router.clip.loaded
    assert _semantic(router, None) is None and not router.clip.loaded  # no text: CLIP never built
    assert _semantic(router, "a dog").shape == (1, 64) and router.clip.loaded
    stored = {p.dtype for p in router.clip.clip.model.parameters()}
    assert torch.bfloat16 in stored  # the router's CLIP is the compact one


def test_unavailable_clip_weights_drop_text_relevance_with_one_warning(tmp_path, caplog):
    router = build_router("clip", "none", clip_model="fastsam2-tiny", clip_pretrained=str(tmp_path / "none.pt"))
    with caplog.at_level(logging.WARNING):
        assert _semantic(router, "a dog") is None
        assert _semantic(router, "a cat") is None
    assert router.clip.unavailable
    assert caplog.text.count("routing without text relevance") == 1
    assert "could not load CLIP fastsam2-tiny" in caplog.text


def test_router_trained_on_another_sam2_is_named(tmp_path, caplog):
    from fastsam2.config import JobConfig
    from fastsam2.tracking.factory import build_tracker
    from fastsam2.tracking.router import Router, RouterConfig, RouterMLP

    path = tmp_path / "router.pt"
    Router(RouterConfig(semantic="none"), mlp=RouterMLP(256)).save(path, sam2_config="sam2_hiera_s", image_size=128,
                                                                    clip_model=None)
    cfg = JobConfig(inputs=["x"], output=str(tmp_path / "o"),
                    model={"random_weights": True, "image_size": 128, "device": "cpu"},
                    pruning={"keep_ratio": 0.5, "router_weights": str(path)})
    with caplog.at_level(logging.WARNING):
        build_tracker(cfg)
    assert "router weights were trained on sam2_hiera_s, this predictor is sam2.1_hiera_t" in caplog.text


@pytest.mark.parametrize("bad", ["sam2.1_hiera_xl", "fasterrcnn_resnet50_fpn"])
def test_unknown_sam2_config_is_named(bad):
    with pytest.raises(ValueError, match="unknown SAM2 config"):
        load_sam2(bad, image_size=128, device="cpu", random_weights=True)


def test_the_router_and_text_selection_of_one_actor_share_one_clip(tmp_path):
    """A tracking actor of a --text run holds one CLIP for the router's text relevance and for
    selecting late objects (was two: a bf16 copy and an fp32 one); freed once nobody holds it."""
    import gc
    import weakref

    from fastsam2.config import JobConfig
    from fastsam2.models.factory import shared_clip
    from fastsam2.stages import LazyTextScorer
    from fastsam2.tracking.factory import build_router_for

    cfg = JobConfig(inputs=["x"], output=str(tmp_path), model={"random_weights": True, "device": "cpu"},
                    pruning={"keep_ratio": 0.3, "clip_model": "fastsam2-tiny"})
    router = build_router_for(cfg, torch.device("cpu"))
    scorer = LazyTextScorer(cfg)()
    assert router.clip.clip.model is scorer.clip.model
    assert {p.dtype for p in scorer.clip.model.parameters()} >= {torch.bfloat16}  # the router's compact storage
    assert shared_clip("fastsam2-tiny", None, random_weights=True, weights_dtype=torch.bfloat16) is scorer.clip
    held = weakref.ref(scorer.clip.model)
    del router, scorer
    gc.collect()
    assert held() is None  # the cache does not keep a model alive
