"""Temporal prior (the previous mask on the token grid) and the visual-context score."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def prior_from_masks(mask_logits: Tensor, grid: tuple[int, int], dilation: int = 2) -> Tensor:
    """Tokens covered by a predicted mask, dilated by ``dilation`` tokens: [B, H*W] bool.

    ``mask_logits`` [B, 1, h, w] are SAM2 mask logits at any resolution (stock
    ``pred_masks`` are image_size/4); a token is covered if any pixel inside it is
    foreground (max pooling), then a (2d+1)x(2d+1) max filter dilates the set, so
    an object that moves a little between frames stays inside it.
    """
    fg = (mask_logits > 0).float()
    if fg.dim() == 3:
        fg = fg.unsqueeze(1)
    tok = F.adaptive_max_pool2d(fg, grid)
    if dilation > 0:
        tok = F.max_pool2d(tok, kernel_size=2 * dilation + 1, stride=1, padding=dilation)
    return tok.flatten(1) > 0


def rank_normalize(scores: Tensor) -> Tensor:
    """Map each row of ``scores`` [B, N] to its rank in [0, 1] (scale-free fusion)."""
    n = scores.shape[-1]
    ranks = scores.argsort(dim=-1).argsort(dim=-1).to(torch.float32)
    return ranks / max(n - 1, 1)


def context_signal(tokens: Tensor, prior: Tensor | None) -> Tensor:
    """Visual-context score per token from the tokens themselves, [B, N].

    With a non-empty prior: cosine similarity to the mean token inside the prior
    (tokens that look like the tracked object). Without one (object lost, or no
    mask yet): distinctiveness, 1 - cosine to the frame's mean token.
    """
    x = F.normalize(tokens.float(), dim=-1)  # [B, N, C]
    out = torch.empty(x.shape[:2], device=x.device, dtype=torch.float32)
    for b in range(x.shape[0]):
        if prior is not None and bool(prior[b].any()):
            proto = F.normalize(x[b][prior[b]].mean(0), dim=0)
            out[b] = x[b] @ proto
        else:
            proto = F.normalize(x[b].mean(0), dim=0)
            out[b] = 1.0 - x[b] @ proto
    return out
