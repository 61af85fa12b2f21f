"""Load an open_clip model (with its preprocessing and tokenizer) for the router.

Same shape as the SAM2 loader: a config name, a weight source, or random weights
for smoke tests on machines without downloads. Real weights go through
``open_clip.create_model_and_transforms(name, pretrained=...)``.

``TINY`` is a 2-layer, 64-wide CLIP built from open_clip's own classes via
config overrides; tests use it because a ViT-B forward is too slow for CI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

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


class ClipWeightsUnavailable(RuntimeError):
    """The requested pretrained CLIP weights could not be loaded (e.g. no network)."""


@dataclass
class ClipBundle:
    """An open_clip model with what it needs around it."""

    model: torch.nn.Module
    tokenizer: Callable[..., torch.Tensor]
    preprocess: Any
    name: str
    pretrained: str | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_clip(
    model_name: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    *,
    random_weights: bool = False,
    device: str | torch.device = "cpu",
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> ClipBundle:
    """Build an open_clip model in eval mode.

    ``random_weights=True`` builds the architecture with ``pretrained=None`` from a
    fixed seed (nothing downloaded; similarities are meaningless but shapes and
    costs are real). ``model_name`` may also be ``fastsam2-tiny`` (see ``TINY_OVERRIDES``).
    """
    import open_clip

    base, extra = CUSTOM_MODELS.get(model_name, (model_name, {}))
    kwargs = {**extra, **(overrides or {})}
    weights = None if random_weights else pretrained
    if weights is None and not random_weights:
        raise ValueError("pass pretrained=<tag or path> or random_weights=True")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                base, pretrained=weights, device=device, **kwargs
            )
        except Exception as exc:  # noqa: BLE001 - re-raised with a named cause
            if weights is None:
                raise
            raise ClipWeightsUnavailable(
                f"could not load CLIP {model_name} weights {weights!r} ({exc}); "
                "pass a local checkpoint path or use random weights for a smoke test"
            ) from exc
    model.eval()
    if random_weights:
        log.warning("CLIP %s built with RANDOM weights: text relevance is meaningless", model_name)
    tokenizer = open_clip.get_tokenizer(base)
    visual = model.visual
    image_size = int(visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size)
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return ClipBundle(
        model=model,
        tokenizer=tokenizer,
        preprocess=preprocess,
        name=model_name,
        pretrained=weights,
        image_size=image_size,
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
    )
