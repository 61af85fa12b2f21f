"""Token router: which tokens of a frame go through memory attention.

Signals (all on the SAM2 token grid, see :mod:`fastsam2.tracking.signals`):

- semantic relevance to the video's text phrase (dense CLIP by default, the
  paper's LSQ projection as ``paper``, or ``none``), per object, on a square
  region around the object's prior (``semantic_crop``) at the input size that
  keeps CLIP's whole-frame patch density; recomputed on keyframes only (the
  object's first frame, when its prior leaves the scored region, or after
  ``keyframe_interval`` frames) and reused in between. Without a prior (or with
  ``semantic_crop=False``) the whole frame is scored, and a prior whose IoU with
  the one at the keyframe drops below ``keyframe_min_iou`` makes a keyframe;
- uncertainty from dropout in image-encoder blocks 3-5 (closed form by default,
  sampled MC with ``mc_passes`` as an option, or ``none``);
- visual context: the tokens themselves (similarity to the tracked object's
  mean token);
- the previous frame's mask, dilated by ``prior_dilation`` tokens: those tokens
  are kept first, all of them while they fit in the budget minus the background
  share, else their best-scored ones; then an evenly spread share
  (``background_fraction``) of background tokens; then the best scores.

Fusion: a 2-layer MLP (3C -> 256 -> 1, GELU) when trained weights are given,
otherwise a training-free weighted sum of rank-normalised signals. With no text
the semantic term simply drops out; the rest still ranks tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsam2.models.factory import CLIP_WEIGHTS_DTYPE
from fastsam2.tracking.signals import (
    ClipDenseSimilarity,
    EncoderTaps,
    closed_form_uncertainty,
    context_signal,
    mc_dropout_uncertainty,
    paper_lsq_relevance,
    rank_normalize,
)

log = logging.getLogger(__name__)

SEMANTIC_MODES = ("clip", "paper", "none")
UNCERTAINTY_MODES = ("closed_form", "mc", "none")
WEIGHTS_FORMAT = "fastsam2-router-v1"


@dataclass
class RouterConfig:
    """Router options (all have working defaults)."""

    semantic: str = "clip"  # "clip" | "paper" | "none"
    uncertainty: str = "closed_form"  # "closed_form" | "mc" | "none"
    uncertainty_blocks: tuple[int, ...] = (3, 4, 5)
    dropout_p: float = 0.1
    mc_passes: int = 5  # the paper's T
    keyframe_interval: int = 16  # upper bound; motion of the prior makes keyframes sooner
    keyframe_min_iou: float = 0.5  # whole-frame maps only
    semantic_crop: bool = True  # score a region around each object's prior, not the whole frame
    crop_margin: float = 0.5  # the region: the prior's box grown by this x its side, each side
    crop_min_fraction: float = 0.5  # ... and at least this share of the frame's side
    prior_dilation: int = 2  # tokens
    background_fraction: float = 0.1  # share of the budget spread over the background
    w_semantic: float = 0.4
    w_uncertainty: float = 0.2
    w_context: float = 0.4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.semantic not in SEMANTIC_MODES:
            raise ValueError(f"semantic must be one of {SEMANTIC_MODES}, got {self.semantic!r}")
        if self.uncertainty not in UNCERTAINTY_MODES:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY_MODES}, got {self.uncertainty!r}")
        if not 0.0 <= self.background_fraction < 1.0:
            raise ValueError("background_fraction must be in [0, 1)")
        self.uncertainty_blocks = tuple(int(b) for b in self.uncertainty_blocks)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RouterConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class RouterMLP(nn.Module):
    """Fusion MLP: per token [x, s*x, u*x] (3C) -> 256 -> 1 logit, GELU."""

    def __init__(self, dim: int = 256, hidden: int = 256) -> None:
        super().__init__()
        self.dim = dim
        self.fc1 = nn.Linear(3 * dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, feats: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(feats))).squeeze(-1)


def mlp_features(tokens: Tensor, semantic: Tensor | None, uncertainty: Tensor | None) -> Tensor:
    """Router MLP input [B, N, 3C]: visual context and the two signal-gated copies.

    ``x`` is the layer-normalised token (no affine); the semantic and uncertainty
    maps are rank-normalised to [-1, 1] and gate ``x``; a missing signal gives
    zeros (training drops the text at random so the MLP learns that case).
    """
    x = F.layer_norm(tokens.float(), tokens.shape[-1:])
    zeros = torch.zeros_like(x)
    s = x * (2 * rank_normalize(semantic) - 1).unsqueeze(-1) if semantic is not None else zeros
    u = x * (2 * rank_normalize(uncertainty) - 1).unsqueeze(-1) if uncertainty is not None else zeros
    return torch.cat([x, s, u], dim=-1)


def select_tokens(
    scores: Tensor, prior: Tensor | None, k: int, background_fraction: float = 0.1
) -> Tensor:
    """Pick ``k`` token indices (sorted ascending) from one frame's ``scores`` [N].

    Order of precedence: the prior tokens (all of them while they fit in
    ``k - n_background``, otherwise their best-scored ones, so the budget holds);
    then ``n_background = round(background_fraction * k)`` tokens spread evenly
    over the rest in raster order (context far from the object); then the
    highest scores.
    """
    n = scores.numel()
    k = max(1, min(int(k), n))
    if k == n:
        return torch.arange(n, device=scores.device)
    chosen = torch.zeros(n, dtype=torch.bool, device=scores.device)
    n_bg = int(round(background_fraction * k))
    if prior is not None and bool(prior.any()):
        p_idx = prior.nonzero().squeeze(1)
        budget = max(k - n_bg, 0)
        if p_idx.numel() > budget:
            p_idx = p_idx[scores[p_idx].topk(budget).indices]
        chosen[p_idx] = True
    n_bg = min(n_bg, k - int(chosen.sum()))
    if n_bg > 0:
        rest = (~chosen).nonzero().squeeze(1)
        step = rest.numel() / n_bg
        picks = (torch.arange(n_bg, device=scores.device, dtype=torch.float64) * step + step / 2).long()
        chosen[rest[picks.clamp_(max=rest.numel() - 1)]] = True
    remaining = k - int(chosen.sum())
    if remaining > 0:
        masked = scores.float().masked_fill(chosen, float("-inf"))
        chosen[masked.topk(remaining).indices] = True
    return chosen.nonzero().squeeze(1)


def relevance_box(prior: Tensor | None, grid: tuple[int, int], margin: float,
                  min_fraction: float) -> tuple[int, int, int, int] | None:
    """Square token box (y0, x0, y1, x1; exclusive ends) around a prior [1 or B, H*W].

    The prior's bounding box grown by ``margin`` x its side on each side, at least
    ``min_fraction`` of the grid's side, shifted to lie inside the grid. ``None``
    (score the whole frame) without a prior.
    """
    if prior is None or not bool(prior.any()):
        return None
    H, W = grid
    ys, xs = prior.any(0).view(H, W).nonzero(as_tuple=True)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    side = max(y1 - y0, x1 - x0)
    side = min(max(H, W), max(int(round(side * (1 + 2 * margin))), int(round(min_fraction * max(H, W))), 1))
    sh, sw = min(side, H), min(side, W)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = min(max(int(round(cy - sh / 2)), 0), H - sh)
    left = min(max(int(round(cx - sw / 2)), 0), W - sw)
    return top, left, top + sh, left + sw


def _inside(prior: Tensor, box: tuple[int, int, int, int], grid: tuple[int, int]) -> bool:
    y0, x0, y1, x1 = box
    m = prior.any(0).view(grid)
    return int(m.sum()) == int(m[y0:y1, x0:x1].sum())


def _iou(a: Tensor, b: Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


class Router:
    """Scores tokens and picks the kept set; stateless apart from a per-video cache
    dict that the caller owns (the predictor keeps it in the inference state)."""

    def __init__(
        self,
        config: RouterConfig | None = None,
        clip: ClipDenseSimilarity | None = None,
        mlp: RouterMLP | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.config = config or RouterConfig()
        if self.config.semantic == "clip" and clip is None:
            raise ValueError(
                "semantic='clip' needs a CLIP model: pass clip=ClipDenseSimilarity(load_clip(...)), "
                "or use semantic='none' / 'paper'"
            )
        self.clip = clip
        self.mlp = mlp.eval() if mlp is not None else None
        self.meta = dict(meta or {})
        self._gen: torch.Generator | None = None

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_weights(cls, path: str | Path, clip: ClipDenseSimilarity | None = None, **overrides: Any) -> Router:
        """Load a trained fusion MLP (saved by ``train-router``) and its router config."""
        from fastsam2.models.checkpoint import load_mapping

        blob = load_mapping(path, "router weights")  # plain data only: never runs code from the file
        if blob.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path} is not a fastsam2 router weights file")
        cfg = RouterConfig.from_dict({**blob["router_config"], **overrides})
        mlp = RouterMLP(blob["dim"], blob.get("hidden", 256))
        mlp.load_state_dict(blob["state_dict"])
        meta = {k: blob.get(k) for k in ("sam2_config", "image_size", "clip_model", "random_weights")}
        return cls(cfg, clip=clip, mlp=mlp, meta=meta)

    def save(self, path: str | Path, *, sam2_config: str, image_size: int, clip_model: str | None,
             random_weights: bool = False, extra: dict[str, Any] | None = None) -> None:
        """Save the fusion MLP with the SAM2 config it was trained on."""
        if self.mlp is None:
            raise ValueError("this router has no MLP to save")
        blob = {
            "format": WEIGHTS_FORMAT,
            "state_dict": self.mlp.state_dict(),
            "dim": self.mlp.dim,
            "hidden": self.mlp.fc1.out_features,
            "router_config": asdict(self.config),
            "sam2_config": sam2_config,
            "image_size": image_size,
            "clip_model": clip_model,
            "random_weights": random_weights,
            **(extra or {}),
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, path)

    # ---- what the predictor must capture ------------------------------------------------
    @property
    def needs_hidden_taps(self) -> bool:
        return self.config.uncertainty == "closed_form"

    @property
    def needs_block_input(self) -> bool:
        return self.config.uncertainty == "mc"

    # ---- signals -----------------------------------------------------------------------
    def uncertainty_from_taps(self, taps: EncoderTaps, trunk: nn.Module, grid: tuple[int, int]) -> Tensor | None:
        """Uncertainty map [B, H*W] from one encoder forward's taps (None if disabled)."""
        cfg = self.config
        if cfg.uncertainty == "closed_form" and taps.hidden:
            return closed_form_uncertainty(taps, trunk, cfg.uncertainty_blocks, cfg.dropout_p, grid)
        if cfg.uncertainty == "mc" and taps.block_input is not None:
            if self._gen is None or self._gen.device != taps.block_input.device:
                self._gen = torch.Generator(device=taps.block_input.device).manual_seed(cfg.seed)
            return mc_dropout_uncertainty(
                trunk, taps.block_input, cfg.uncertainty_blocks, cfg.mc_passes, cfg.dropout_p, grid, self._gen
            )
        return None

    def semantic_map(
        self,
        cache: dict[str, Any],
        frame_idx: int,
        obj_key: Any,
        tokens: Tensor,
        text: str | None,
        image_fn: Callable[[], Tensor | None],
        grid: tuple[int, int],
        prior: Tensor | None,
    ) -> Tensor | None:
        """Semantic relevance [B, H*W] for this frame, from the keyframe cache when valid."""
        mode = self.config.semantic
        if mode == "none":
            return None
        if mode == "paper":
            emb = self.clip.text_embedding(text) if (self.clip is not None and text) else None
            return paper_lsq_relevance(tokens, emb)
        if not text:
            return None
        cfg = self.config
        entries = cache.setdefault("semantic", {})
        entry = entries.get(obj_key)
        has_prior = prior is not None and bool(prior.any())
        fresh = (
            entry is None
            or entry["text"] != text
            or entry["map"].shape[-1] != grid[0] * grid[1]
            or abs(frame_idx - entry["frame"]) >= cfg.keyframe_interval
        )
        if not fresh and entry["frame"] != frame_idx and has_prior:
            if entry["box"] is not None:  # the object left the region CLIP scored
                fresh = not _inside(prior, entry["box"], grid)
            elif cfg.semantic_crop:  # a whole-frame map while the object was lost: crop now
                fresh = True
            else:
                ref = entry["prior"]
                fresh = ref is not None and ref.shape == prior.shape and _iou(ref, prior) < cfg.keyframe_min_iou
        if fresh:
            image = image_fn()
            if image is None:
                return entry["map"] if entry is not None else None
            box = relevance_box(prior, grid, cfg.crop_margin, cfg.crop_min_fraction) if cfg.semantic_crop else None
            relevance = self.clip.similarity(image, text, grid, box)
            if relevance is None:  # CLIP turned out to be unavailable: this signal drops out
                return None
            entry = {"frame": frame_idx, "text": text, "box": box, "map": relevance,
                     "prior": prior.clone() if has_prior else None}
            entries[obj_key] = entry
            cache["keyframes"] = cache.get("keyframes", 0) + 1
        return entry["map"]

    # ---- fusion and selection -----------------------------------------------------------
    @torch.no_grad()
    def score(
        self, tokens: Tensor, semantic: Tensor | None, uncertainty: Tensor | None, prior: Tensor | None
    ) -> Tensor:
        """Per-token keep score [B, N] (higher = keep)."""
        if self.mlp is not None:
            feats = mlp_features(tokens, semantic, uncertainty)
            mlp = self.mlp.to(feats.device)
            return mlp(feats)
        cfg = self.config
        parts: list[tuple[float, Tensor]] = [(cfg.w_context, rank_normalize(context_signal(tokens, prior)))]
        if semantic is not None:
            parts.append((cfg.w_semantic, rank_normalize(semantic.float())))
        if uncertainty is not None:
            parts.append((cfg.w_uncertainty, rank_normalize(uncertainty.float())))
        total = sum(w for w, _ in parts) or 1.0
        return sum(w * s for w, s in parts) / total

    def select(self, scores: Tensor, prior: Tensor | None, k: int) -> Tensor:
        """Kept indices for one frame (batch merged): scores [B, N], prior [B, N]."""
        s = scores.float().mean(0)
        p = prior.any(0) if prior is not None else None
        return select_tokens(s, p, k, self.config.background_fraction)


def build_router(
    semantic: str | None = None,
    uncertainty: str | None = None,
    *,
    clip_model: str = "ViT-B-16",
    clip_pretrained: str | None = "openai",
    clip_random_weights: bool = False,
    clip_weights_dtype: torch.dtype | None = CLIP_WEIGHTS_DTYPE,
    router_weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    **config: Any,
) -> Router:
    """Router from CLI-style options.

    Prepares CLIP when the semantic mode needs it: the model is built on the
    first phrase (a run without text never holds it or imports open_clip), its
    weight matrices stored as ``clip_weights_dtype`` (bf16: half the bytes, fp32
    arithmetic; ``None`` keeps fp32); weights that cannot be had then drop text
    relevance with a warning (see :class:`ClipDenseSimilarity`). Loads the
    trained MLP when ``router_weights`` is given. ``None`` for ``semantic``/``uncertainty`` means
    the saved config's value (with weights) or the default (``clip`` and
    ``closed_form``); so does ``None`` for any other ``RouterConfig`` field.
    """
    overrides = {k: v for k, v in (("semantic", semantic), ("uncertainty", uncertainty)) if v is not None}
    overrides.update({k: v for k, v in config.items() if v is not None})  # None = default / saved value
    if router_weights is not None:
        from fastsam2.models.checkpoint import load_mapping

        saved = load_mapping(router_weights, "router weights").get("router_config") or {}
        effective = RouterConfig.from_dict({**saved, **overrides})
    else:
        effective = RouterConfig.from_dict(overrides)
    clip = None
    if effective.semantic == "clip":  # paper mode only uses the text norm: no CLIP needed
        import functools

        from fastsam2.models.factory import shared_clip

        if clip_pretrained is None and not clip_random_weights:
            raise ValueError("pass clip_pretrained=<tag or path> or clip_random_weights=True")
        # shared: --text grounding in the same actor reads the same model (one copy per process)
        clip = ClipDenseSimilarity(functools.partial(shared_clip, clip_model, clip_pretrained, device=device,
                                                     random_weights=clip_random_weights,
                                                     weights_dtype=clip_weights_dtype))
    if router_weights is not None:
        return Router.from_weights(router_weights, clip=clip, **overrides)
    return Router(effective, clip=clip)
