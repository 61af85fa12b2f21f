"""Token uncertainty from dropout in the image encoder's MLPs (Hiera blocks 3-5).

Sampled Monte-Carlo dropout re-runs blocks 3-5 ``T`` times with dropout on each
block's MLP hidden layer and takes the per-token variance of block 5's output:
faithful to the paper, but T passes of three encoder blocks cost about as much as
what pruning saves on CPU (see the design note).

The cheap default is closed form. With dropout (rate p, inverted scaling) on a
hidden activation ``a`` feeding ``y = W2 a``, the output variance is exactly
``Var[y_j] = p / (1 - p) * sum_i W2[j, i]^2 a_i^2``: one matmul of ``a^2`` with
the squared weights per block. Per-block variances (averaged over channels) are
summed over the blocks; propagation between blocks is ignored.

The activations come from forward hooks registered on the predictor's own
encoder for the duration of one ``forward_image`` call (observe-only: the hooks
return nothing, so the encoder's numerics are unchanged).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import do_pool
from sam2.modeling.backbones.utils import window_partition, window_unpartition
from torch import Tensor, nn


@dataclass
class EncoderTaps:
    """Activations captured during one image-encoder forward."""

    hidden: dict[int, Tensor] = field(default_factory=dict)  # block -> MLP hidden (post-act)
    block_input: Tensor | None = None  # input of the first tapped block [B, h, w, C]


@contextmanager
def capture_encoder_taps(
    trunk: nn.Module, blocks: Sequence[int], hidden: bool = True, block_input: bool = False
) -> Iterator[EncoderTaps]:
    """Record MLP hidden activations of ``blocks`` (and the first block's input)."""
    taps = EncoderTaps()
    handles = []

    def _hidden_hook(idx: int):
        def hook(_mod, args):
            taps.hidden[idx] = args[0].detach()

        return hook

    def _input_hook(_mod, args):
        taps.block_input = args[0].detach()

    try:
        if hidden:
            for b in blocks:
                handles.append(trunk.blocks[b].mlp.layers[-1].register_forward_pre_hook(_hidden_hook(b)))
        if block_input:
            handles.append(trunk.blocks[blocks[0]].register_forward_pre_hook(_input_hook))
        yield taps
    finally:
        for h in handles:
            h.remove()


def _to_grid(u: Tensor, grid: tuple[int, int]) -> Tensor:
    """[B, h, w] -> [B, H*W] on the token grid (average-pool down, bilinear up)."""
    u = u.unsqueeze(1)
    if u.shape[-2] >= grid[0] and u.shape[-1] >= grid[1]:
        u = F.adaptive_avg_pool2d(u, grid)
    else:
        u = F.interpolate(u, size=grid, mode="bilinear", align_corners=False)
    return u.flatten(1)


@torch.no_grad()
def closed_form_uncertainty(
    taps: EncoderTaps, trunk: nn.Module, blocks: Sequence[int], p: float, grid: tuple[int, int]
) -> Tensor:
    """Exact dropout variance of each tapped block's MLP output, summed: [B, H*W]."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout rate must be in (0, 1), got {p}")
    total = None
    for b in blocks:
        a = taps.hidden[b].float()  # [B, h, w, Hd]
        w2 = trunk.blocks[b].mlp.layers[-1].weight.float()  # [Cout, Hd]
        # sum_i W2[j,i]^2 a_i^2, averaged over j: = (a^2) . mean_j(W2[j,:]^2)
        col = w2.pow(2).mean(0)  # [Hd]
        var = (a.pow(2) @ col) * (p / (1.0 - p))  # [B, h, w]
        u = _to_grid(var, grid)
        total = u if total is None else total + u
    return total


def _block_forward_dropout(blk: nn.Module, x: Tensor, p: float, gen: torch.Generator | None) -> Tensor:
    """``MultiScaleBlock.forward`` (eval) with dropout on the MLP hidden layer."""
    shortcut = x
    x = blk.norm1(x)
    if blk.dim != blk.dim_out:
        shortcut = do_pool(blk.proj(x), blk.pool)
    window_size = blk.window_size
    if window_size > 0:
        H, W = x.shape[1], x.shape[2]
        x, pad_hw = window_partition(x, window_size)
    x = blk.attn(x)
    if blk.q_stride:
        window_size = blk.window_size // blk.q_stride[0]
        H, W = shortcut.shape[1:3]
        pad_h = (window_size - H % window_size) % window_size
        pad_w = (window_size - W % window_size) % window_size
        pad_hw = (H + pad_h, W + pad_w)
    if blk.window_size > 0:
        x = window_unpartition(x, window_size, pad_hw, (H, W))
    x = shortcut + x
    mlp = blk.mlp
    if len(mlp.layers) != 2:
        raise NotImplementedError("MC dropout expects 2-layer block MLPs")
    h = mlp.act(mlp.layers[0](blk.norm2(x)))
    keep = torch.empty_like(h).bernoulli_(1.0 - p, generator=gen)
    h = mlp.layers[1](h * keep / (1.0 - p))
    return x + h


@torch.no_grad()
def mc_dropout_uncertainty(
    trunk: nn.Module,
    block_input: Tensor,
    blocks: Sequence[int],
    passes: int,
    p: float,
    grid: tuple[int, int],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sampled MC dropout: ``passes`` batched runs of blocks ``blocks[0]..blocks[-1]``.

    Returns the per-token variance of the last block's output (mean over
    channels), on the token grid: [B, H*W].
    """
    if passes < 2:
        raise ValueError("MC dropout needs at least 2 passes")
    B = block_input.shape[0]
    x = block_input.repeat_interleave(passes, dim=0)
    for b in range(blocks[0], blocks[-1] + 1):
        x = _block_forward_dropout(trunk.blocks[b], x, p, generator)
    x = x.float().view(B, passes, *x.shape[1:])
    var = x.var(dim=1, unbiased=False).mean(-1)  # [B, h, w]
    return _to_grid(var, grid)
