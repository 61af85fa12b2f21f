"""The open_clip models the router and ``--text`` grounding use, by name.

The loader is :func:`fastsam2.models.factory.load_clip` (real weights through
``open_clip.create_model_and_transforms(name, pretrained=...)``, or random ones
for smoke tests on machines without downloads).

``TINY`` is a 2-layer, 64-wide CLIP built from open_clip's own classes via
config overrides; tests use it because a ViT-B forward is too slow for CI.
"""

from __future__ import annotations

from typing import Any

from fastsam2.models.weights import ClipWeightsUnavailable

__all__ = ["CUSTOM_MODELS", "ClipWeightsUnavailable", "DEFAULT_MODEL", "DEFAULT_PRETRAINED", "TINY_OVERRIDES"]

#: Default router CLIP: ViT-B/16 gives a 14x14 patch grid at 224 (B/32 only 7x7).
DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"

#: A tiny open_clip config (model_kwargs overrides on top of ViT-B-16) for tests.
TINY_OVERRIDES: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 112, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

#: Names accepted besides open_clip's own: name -> (base open_clip name, overrides).
CUSTOM_MODELS: dict[str, tuple[str, dict[str, Any]]] = {"fastsam2-tiny": ("ViT-B-16", TINY_OVERRIDES)}
