"""Training-free sparse image encoder for video: recompute only what changed or matters.

SAM2's Hiera trunk is the floor of a pruned frame (memory attention shrinks, the
encoder does not). Consecutive frames of a video are mostly the same, so, in the
spirit of Eventful Transformers, this module keeps one frame of activations per
Hiera block and, on the next frame, recomputes per block only

* ``temporal``: the tokens whose block input changed, relative to the input the
  cached output was computed from, by at least ``threshold``
  (``||x - x_ref|| / ||x_ref||``), and/or
* ``object``: the tokens near the tracked objects (previous masks of every
  object, dilated, union), whatever their change;

``both`` recomputes the union of the two. Everything else reuses the cached
block output. Per block:

* windowed attention (most Hiera blocks): a token cannot be recomputed without
  its whole window, so the unit is the window; MLP and norms are per token, and
  the pooling blocks (where the grid halves) pool inside windows, so the unit is
  the same window on the input and output grids;
* global attention: the unit is the token. Recomputed tokens are **exact** given
  the block input (their queries attend to keys and values of *all* tokens,
  computed from the current input); the **approximation** is that skipped tokens
  keep their cached output although their attention context changed a little.

A token whose input did not change is reused exactly (its output would be the
same), so the only approximation is reuse below the threshold, skipped global
context, and (``object`` mode) ignoring change away from the objects. Drift is
bounded by a full recompute every ``refresh`` frames, on the first frame, and on
scene cuts (at least ``scene_cut_fraction`` of the patch tokens changed; camera
motion lands here too, so such videos fall back to full frames). A block whose
selected share exceeds ``dense_fraction`` is computed in full (cheaper than
gathering). Threshold 0 selects every token and refresh 1 makes every frame a
full one: both are the stock encoder bit for bit (full frames run sam2's own
modules in sam2's own order).

The cache (:class:`EncoderCache`) belongs to one video (it lives in the
inference state, the predictor drops it when propagation ends) and holds one
frame: per block its reference input and its output (plus the MLP hidden
activations of blocks the router taps), so it does not grow with the video.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from sam2.modeling.backbones.hieradet import do_pool
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from torch import Tensor, nn

from fastsam2.tracking.signals.uncertainty import EncoderTaps, capture_encoder_taps

SPARSITY_MODES = ("off", "temporal", "object", "both")
#: Key of the per-video encoder cache in a sam2 inference state.
ENCODER_CACHE_KEY = "fastsam2_encoder_cache"


@dataclass(frozen=True)
class EncoderSparsityConfig:
    """How the sparse encoder decides what to recompute (``mode="off"``: stock encoder)."""

    mode: str = "off"
    refresh: int = 8  # full recompute every N frames (1 = every frame: exact)
    threshold: float = 0.1  # relative change of a token's block input that triggers recompute (0: all)
    scene_cut_fraction: float = 0.5  # share of changed patch tokens that forces a full frame
    dense_fraction: float = 0.7  # a block with a larger selected share is computed in full
    object_dilation: int = 2  # tokens of the SAM grid (16 px) around the previous masks

    def __post_init__(self) -> None:
        if self.mode not in SPARSITY_MODES:
            raise ValueError(f"encoder sparsity must be one of {SPARSITY_MODES}, got {self.mode!r}")
        if int(self.refresh) != self.refresh or self.refresh < 1:
            raise ValueError(f"encoder refresh must be a whole number >= 1, got {self.refresh}")
        if not self.threshold >= 0.0:
            raise ValueError(f"encoder threshold must be >= 0, got {self.threshold}")
        for name in ("scene_cut_fraction", "dense_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.object_dilation < 0:
            raise ValueError(f"object_dilation must be >= 0, got {self.object_dilation}")

    @property
    def active(self) -> bool:
        return self.mode != "off"

    @property
    def temporal(self) -> bool:
        return self.mode in ("temporal", "both")

    @property
    def object(self) -> bool:
        return self.mode in ("object", "both")


@dataclass
class _BlockCache:
    x_ref: Tensor  # [1, H, W, C] block input each token's cached output was computed from
    y: Tensor  # [1, Hp, Wp, C'] block output, padded to the block's output window grid
    hidden: Tensor | None = None  # [1, Hp, Wp, hidden] MLP hidden activations (tapped blocks)


@dataclass
class EncoderCache:
    """One video's cached encoder activations: one frame, whatever the video's length."""

    blocks: list[_BlockCache] = field(default_factory=list)
    image_shape: tuple[int, ...] | None = None
    frames_since_full: int = 0
    tap_blocks: tuple[int, ...] = ()

    def clear(self) -> None:
        self.blocks = []
        self.image_shape = None
        self.frames_since_full = 0

    def nbytes(self) -> int:
        total = 0
        for b in self.blocks:
            for t in (b.x_ref, b.y, b.hidden):
                if t is not None:
                    total += t.numel() * t.element_size()
        return total


@dataclass
class EncodeStats:
    """What one frame's encode did (token counts summed over blocks, output grid)."""

    full: bool
    reason: str  # "first", "refresh", "scene_cut", "no_prior", "sparse", ...
    tokens_recomputed: int
    tokens_total: int
    changed_fraction: float  # share of patch tokens at/above the threshold (1.0 on full frames)
    per_block: list[float] = field(default_factory=list)  # recomputed share per block

    @property
    def recompute_fraction(self) -> float:
        return self.tokens_recomputed / max(self.tokens_total, 1)


def relative_change(x: Tensor, ref: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-token ``||x - ref|| / ||ref||`` over channels: [1, H, W, C] -> [H, W]."""
    num = torch.linalg.vector_norm((x - ref).float(), dim=-1)
    den = torch.linalg.vector_norm(ref.float(), dim=-1)
    return (num / (den + eps))[0]


def _grid_mask(prior: Tensor, hw: tuple[int, int]) -> Tensor:
    """Bool [h, w] mask on any grid -> [H, W] (max-pool down, nearest up)."""
    m = prior.float()[None, None]
    if m.shape[-2] >= hw[0] and m.shape[-1] >= hw[1]:
        m = F.adaptive_max_pool2d(m, hw)
    else:
        m = F.interpolate(m, size=hw, mode="nearest")
    return m[0, 0] > 0


def _pad_to(x: Tensor, ws: int) -> Tensor:
    """[1, H, W, C] -> zero-padded to multiples of ``ws`` (as sam2's window_partition pads)."""
    H, W = x.shape[1:3]
    ph, pw = (ws - H % ws) % ws, (ws - W % ws) % ws
    return F.pad(x, (0, 0, 0, pw, 0, ph)) if ph or pw else x


def _windows_view(x: Tensor, ws: int) -> Tensor:
    """A padded [1, Hp, Wp, C] grid seen as [nWh, nWw, ws, ws, C] (a view: writes go through)."""
    _, Hp, Wp, C = x.shape
    return x.view(Hp // ws, ws, Wp // ws, ws, C).permute(0, 2, 1, 3, 4)


def _mlp_with_hidden(mlp: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """sam2's ``MLP.forward`` (2 layers), also returning the hidden activation.

    Calls the layers' ``forward`` directly, so observe-only hooks on them do not
    fire with a partial (subset) activation.
    """
    layers = list(mlp.layers)
    h = x
    for layer in layers[:-1]:
        h = mlp.act(layer.forward(h))
    out = layers[-1].forward(h)
    if getattr(mlp, "sigmoid_output", False):
        out = torch.sigmoid(out)
    return out, h


class SparseHieraEncoder:
    """Wraps a SAM2 ``ImageEncoder`` (Hiera trunk + FPN neck) with per-block reuse.

    Composes the encoder's own modules (no weight copies, nothing patched). The
    neck runs in full (1x1 convolutions, a few GFLOPs); patch embedding too.
    """

    def __init__(self, image_encoder: ImageEncoder, config: EncoderSparsityConfig) -> None:
        trunk = image_encoder.trunk
        if not hasattr(trunk, "blocks") or not hasattr(trunk, "patch_embed"):
            raise TypeError(f"sparse encoding needs a Hiera trunk, got {type(trunk).__name__}")
        self.image_encoder = image_encoder
        self.trunk = trunk
        self.config = config

    # ---- public ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self,
        img: Tensor,
        cache: EncoderCache,
        prior: Tensor | None = None,
        tap_blocks: Sequence[int] = (),
        force_full: bool = False,
    ) -> tuple[dict[str, Any], EncoderTaps, EncodeStats]:
        """Encode one frame ``img`` [1, 3, S, S]; returns (image-encoder output dict, taps, stats).

        ``prior`` is a bool mask [h, w] on any grid of where the tracked objects
        are (union over objects, already dilated); None when no mask is known.
        ``tap_blocks``: blocks whose MLP hidden activations the caller needs in
        full (the router's uncertainty signal).
        """
        if img.shape[0] != 1:
            raise ValueError(f"the sparse encoder encodes one frame at a time, got a batch of {img.shape[0]}")
        cfg = self.config
        tap_blocks = tuple(sorted(int(b) for b in tap_blocks))
        trunk = self.trunk
        x = trunk.patch_embed(img)
        x = x + trunk._get_pos_embed(x.shape[1:3])  # computed once in our predictor (PositionCachedHiera)

        reason = ""
        if force_full:
            reason = "forced"
        elif not cache.blocks or cache.image_shape != tuple(img.shape) or cache.tap_blocks != tap_blocks:
            reason = "first"
        elif cache.frames_since_full + 1 >= cfg.refresh:
            reason = "refresh"
        elif cfg.object and not cfg.temporal and prior is None:
            reason = "no_prior"  # object mode without any mask: nothing says what matters
        changed_fraction = 1.0
        change0 = None
        if not reason:
            change0 = relative_change(x, cache.blocks[0].x_ref)
            changed_fraction = float((change0 >= cfg.threshold).float().mean())
            if changed_fraction >= cfg.scene_cut_fraction:
                reason = "scene_cut"
        if reason:
            outputs, taps, stats = self._encode_full(x, cache, tap_blocks, reason)
            cache.image_shape = tuple(img.shape)
        else:
            outputs, taps, stats = self._encode_sparse(x, cache, prior, tap_blocks, change0)
            stats.changed_fraction = changed_fraction
        return self._neck(outputs), taps, stats

    # ---- full frame: sam2's own modules in sam2's order, caches refilled ----------------------
    def _encode_full(self, x: Tensor, cache: EncoderCache, tap_blocks: tuple[int, ...], reason: str):
        trunk = self.trunk
        cache.clear()  # the old frame goes before the new one is built (no transient second copy)
        blocks: list[_BlockCache] = []
        outputs = []
        tokens = 0
        with capture_encoder_taps(trunk, tap_blocks, hidden=True, block_input=False) as taps:
            for i, blk in enumerate(trunk.blocks):
                x_in = x
                x = blk(x_in)
                ws_out = self._out_window(blk)
                y = _pad_to(x, ws_out) if ws_out else x
                if y is x:  # own storage: updated in place on sparse frames
                    y = x.clone(memory_format=torch.contiguous_format)
                blocks.append(_BlockCache(x_ref=x_in, y=y))
                tokens += x.shape[1] * x.shape[2]
                if self._is_output(i):
                    outputs.append(x.permute(0, 3, 1, 2))
        for b, h in taps.hidden.items():
            ws_out = self._out_window(trunk.blocks[b])
            blocks[b].hidden = (_pad_to(h, ws_out) if ws_out else h).clone(memory_format=torch.contiguous_format)
        if tap_blocks:
            taps.block_input = blocks[tap_blocks[0]].x_ref
        cache.blocks = blocks
        cache.frames_since_full = 0
        cache.tap_blocks = tap_blocks
        stats = EncodeStats(True, reason, tokens, tokens, 1.0, [1.0] * len(blocks))
        return outputs, taps, stats

    # ---- sparse frame ------------------------------------------------------------------------
    def _encode_sparse(self, x: Tensor, cache: EncoderCache, prior: Tensor | None,
                       tap_blocks: tuple[int, ...], change0: Tensor | None):
        cfg = self.config
        trunk = self.trunk
        outputs = []
        taps = EncoderTaps()
        recomputed = total = 0
        per_block = []
        prior_by_grid: dict[tuple[int, int], Tensor] = {}
        # Only tokens the previous block rewrote this frame can have moved away from their
        # reference input (the others were checked against the same threshold before): the
        # change is measured on those alone. Block 0 sees the whole new frame.
        touched: Tensor | None = None
        for i, blk in enumerate(trunk.blocks):
            bc = cache.blocks[i]
            H, W = x.shape[1:3]
            if tap_blocks and i == tap_blocks[0]:
                taps.block_input = x
            select = torch.zeros(H, W, dtype=torch.bool, device=x.device)
            if cfg.temporal:
                if i == 0 and change0 is not None:
                    select |= change0 >= cfg.threshold
                elif touched is None:
                    select |= relative_change(x, bc.x_ref) >= cfg.threshold
                elif bool(touched.any()):
                    rows = x[0][touched]
                    ref = bc.x_ref[0][touched]
                    change = torch.linalg.vector_norm((rows - ref).float(), dim=-1) / (
                        torch.linalg.vector_norm(ref.float(), dim=-1) + 1e-6)
                    select[touched] = change >= cfg.threshold
            if cfg.object and prior is not None:
                if (H, W) not in prior_by_grid:
                    prior_by_grid[(H, W)] = _grid_mask(prior.to(x.device), (H, W))
                select |= prior_by_grid[(H, W)]
            n_out, touched = self._run_block(blk, x, bc, select, i in tap_blocks)
            recomputed += n_out
            Ho, Wo = self._out_hw(blk, H, W)
            total += Ho * Wo
            per_block.append(n_out / (Ho * Wo))
            x = bc.y[:, :Ho, :Wo]
            if i in tap_blocks:
                taps.hidden[i] = bc.hidden[:, :Ho, :Wo]
            if self._is_output(i):
                outputs.append(x.permute(0, 3, 1, 2))
        cache.frames_since_full += 1
        return outputs, taps, EncodeStats(False, "sparse", recomputed, total, 0.0, per_block)

    def recompute_block(self, i: int, x: Tensor, cache: EncoderCache, select: Tensor) -> tuple[int, Tensor]:
        """Run block ``i`` on input ``x`` recomputing only ``select`` (bool [H, W]) at the
        block's granularity, updating ``cache`` in place; returns (#recomputed output tokens,
        bool mask of them). The block's new output is ``cache.blocks[i].y`` (cropped). For tests."""
        return self._run_block(self.trunk.blocks[i], x, cache.blocks[i], select, False)

    def _run_block(self, blk: nn.Module, x: Tensor, bc: _BlockCache, select: Tensor,
                   tapped: bool) -> tuple[int, Tensor]:
        cfg = self.config
        H, W = x.shape[1:3]
        Ho, Wo = self._out_hw(blk, H, W)
        if blk.window_size > 0:
            ws = blk.window_size
            padded = _pad_to(select[None, :, :, None].to(torch.uint8), ws).contiguous()
            sel_win = _windows_view(padded, ws).flatten(2).any(-1).bool()  # [nWh, nWw]
            share = float(sel_win.float().mean())
        else:
            sel_win = None
            share = float(select.float().mean())
        if share == 0.0:
            return 0, torch.zeros(Ho, Wo, dtype=torch.bool, device=x.device)
        if share > cfg.dense_fraction or (blk.window_size == 0 and blk.q_stride):
            self._dense_block(blk, x, bc, tapped)
            return Ho * Wo, torch.ones(Ho, Wo, dtype=torch.bool, device=x.device)
        if sel_win is not None:
            out_mask = self._windowed_subset(blk, x, bc, sel_win)
        else:
            out_mask = self._global_subset(blk, x, bc, select)
        return int(out_mask.sum()), out_mask

    def _dense_block(self, blk: nn.Module, x: Tensor, bc: _BlockCache, tapped: bool) -> None:
        """The whole block (sam2's forward); caches overwritten."""
        if tapped:
            store: dict[str, Tensor] = {}
            handle = blk.mlp.layers[-1].register_forward_pre_hook(lambda _m, a: store.__setitem__("h", a[0]))
            try:
                y = blk(x)
            finally:
                handle.remove()
            bc.hidden[:, : y.shape[1], : y.shape[2]].copy_(store["h"])
        else:
            y = blk(x)
        bc.y[:, : y.shape[1], : y.shape[2]].copy_(y)
        bc.x_ref.copy_(x)

    def _windowed_subset(self, blk: nn.Module, x: Tensor, bc: _BlockCache, sel_win: Tensor) -> Tensor:
        """Recompute the selected windows of a windowed block (exact for those windows);
        returns the bool mask of the output tokens rewritten."""
        ws = blk.window_size
        H, W = x.shape[1:3]
        ih, iw = sel_win.nonzero(as_tuple=True)
        # token coordinates of the selected windows, [k, ws, ws]; sam2 zero-pads the *normalised*
        # input up to whole windows, so positions past the border are gathered clipped, then zeroed
        ar = torch.arange(ws, device=x.device)
        rr = (ih[:, None] * ws + ar)[:, :, None].expand(-1, ws, ws)
        cc = (iw[:, None] * ws + ar)[:, None, :].expand(-1, ws, ws)
        outside = (rr >= H) | (cc >= W)
        rr, cc = rr.clamp(max=H - 1), cc.clamp(max=W - 1)
        xw = x[0, rr, cc]  # [k, ws, ws, C]
        xn_w = blk.norm1(xw)
        if bool(outside.any()):
            xn_w = xn_w.masked_fill(outside[..., None], 0.0)
        if blk.dim != blk.dim_out:
            shortcut = do_pool(blk.proj(xn_w), blk.pool)
        else:
            shortcut = xw
        y = shortcut + blk.attn(xn_w)
        mlp_out, hidden = _mlp_with_hidden(blk.mlp, blk.norm2(y))
        y = y + mlp_out
        ws_out = y.shape[1]
        _windows_view(bc.y, ws_out)[ih, iw] = y
        if bc.hidden is not None:
            _windows_view(bc.hidden, ws_out)[ih, iw] = hidden
        # the selected windows' reference inputs are now the current ones (clipped positions
        # write a border token's own value back to it)
        bc.x_ref[0, rr, cc] = xw
        Ho, Wo = self._out_hw(blk, H, W)
        return sel_win.repeat_interleave(ws_out, 0).repeat_interleave(ws_out, 1)[:Ho, :Wo]

    def _global_subset(self, blk: nn.Module, x: Tensor, bc: _BlockCache, select: Tensor) -> int:
        """Recompute the selected tokens of a global-attention block: their queries attend to
        keys/values of every token (from the current input), so they are exact; the others
        keep their cached outputs (the stated approximation). Returns ``select``."""
        H, W, C = x.shape[1:]
        attn = blk.attn
        idx = select.flatten().nonzero().squeeze(1)  # row-major, as boolean indexing orders them
        flat = x.reshape(H * W, C)
        xn = blk.norm1(flat)
        qkv = attn.qkv(xn).reshape(1, H * W, 3, attn.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)
        q = q.index_select(1, idx)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        o = attn.proj(o.transpose(1, 2).reshape(idx.numel(), -1))
        shortcut = flat.index_select(0, idx)
        if blk.dim != blk.dim_out:
            shortcut = blk.proj(xn.index_select(0, idx))
        y = shortcut + o
        mlp_out, hidden = _mlp_with_hidden(blk.mlp, blk.norm2(y))
        y = y + mlp_out
        bc.y[0, :H, :W][select] = y
        if bc.hidden is not None:
            bc.hidden[0, :H, :W][select] = hidden
        bc.x_ref[0][select] = flat.index_select(0, idx)
        return select

    # ---- helpers -------------------------------------------------------------------------------
    def _is_output(self, i: int) -> bool:
        t = self.trunk
        return i == t.stage_ends[-1] or (i in t.stage_ends and t.return_interm_layers)

    @staticmethod
    def _out_window(blk: nn.Module) -> int:
        """Window size of the block's output grid (0 for global attention)."""
        if blk.window_size == 0:
            return 0
        return blk.window_size // blk.q_stride[0] if blk.q_stride else blk.window_size

    @staticmethod
    def _out_hw(blk: nn.Module, H: int, W: int) -> tuple[int, int]:
        if blk.q_stride:
            return H // blk.q_stride[0], W // blk.q_stride[1]
        return H, W

    def _neck(self, trunk_outputs: list[Tensor]) -> dict[str, Any]:
        """sam2's ``ImageEncoder.forward`` after the trunk (``FpnNeck.forward``, scalp), run as is
        (the predictor's neck hands out its position encodings without copying them:
        :mod:`fastsam2.tracking.position_encoding`)."""
        enc, neck = self.image_encoder, self.image_encoder.neck

        neck_shim = SimpleNamespace(
            convs=neck.convs, position_encoding=neck.position_encoding, fpn_top_down_levels=neck.fpn_top_down_levels,
            fpn_interp_model=neck.fpn_interp_model, fuse_type=neck.fuse_type,
        )
        shim = SimpleNamespace(trunk=lambda _sample: trunk_outputs, scalp=enc.scalp,
                               neck=lambda xs: FpnNeck.forward(neck_shim, xs))
        return ImageEncoder.forward(shim, None)


def sam_forward_image(model: nn.Module, backbone_out: dict[str, Any]) -> dict[str, Any]:
    """What ``SAM2Base.forward_image`` does after the image encoder (high-res projections)."""
    if model.use_high_res_features_in_sam:
        backbone_out["backbone_fpn"][0] = model.sam_mask_decoder.conv_s0(backbone_out["backbone_fpn"][0])
        backbone_out["backbone_fpn"][1] = model.sam_mask_decoder.conv_s1(backbone_out["backbone_fpn"][1])
    return backbone_out
