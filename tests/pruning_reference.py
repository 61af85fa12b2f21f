"""A slow, obviously-correct reference for the pruned predictor (tests only).

It shares no pruning code with :mod:`fastsam2.tracking.pruned_predictor`; it is
stock ``SAM2VideoPredictor`` plus attention masks:

- the memory bank holds every frame's **full** token grid (stock storage), and a
  keep-mask per (frame, object) says which of its tokens a pruned bank would hold;
- memory attention is stock ``MemoryAttention`` over the **full** grid (stock RoPE
  tables, stock layer forwards); pruned memory tokens are masked out as keys of
  the cross-attention and the current frame's pruned tokens are masked out as keys
  of the self-attention;
- after attention, the current frame's pruned positions get the raw features plus
  ``no_mem_embed`` (what SAM2 feeds the decoder on memory-less frames).

Which memory tokens stock SAM2 reads (and in which order) is asked of stock SAM2
itself: its own ``_prepare_memory_conditioned_features`` runs once on a probe bank
whose features *are* the keep-masks, and a pre-hook on ``memory_attention``
captures the assembled memory (then aborts the call). The masks are applied by
swapping the ``F`` that sam2's attention module calls for one whose
``scaled_dot_product_attention`` adds them.

The kept sets come from a function ``kept_fn(frame_idx, obj_idx) -> indices``; the
fast path gets the same decisions through :class:`FixedRouter`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import sam2.modeling.sam.transformer as sam_transformer
import torch
import torch.nn.functional as F
from sam2.sam2_video_predictor import SAM2VideoPredictor
from torch import Tensor

from fastsam2.tracking.router import Router, RouterConfig

KeptFn = Callable[[int, int], Tensor]


def random_kept_fn(num_tokens: int, keep_ratio: float, seed: int = 0) -> KeptFn:
    """Kept indices that differ frame to frame and object to object (sorted, fixed per key)."""
    k = max(1, int(round(keep_ratio * num_tokens)))

    def kept(frame_idx: int, obj_idx: int) -> Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + frame_idx * 101 + obj_idx)
        return torch.randperm(num_tokens, generator=g)[:k].sort().values

    return kept


class FixedRouter(Router):
    """A router whose decisions are ``kept_fn(frame, object)``: the fast path's routing
    step runs as usual (prior, cache, scoring, selection calls), but what it keeps is known."""

    def __init__(self, kept_fn: KeptFn) -> None:
        super().__init__(RouterConfig(semantic="none", uncertainty="none"))
        self.kept_fn = kept_fn

    def semantic_map(self, cache, frame_idx, obj_key, tokens, text, image_fn, grid, prior):
        marks = torch.zeros(1, grid[0] * grid[1])
        marks[0, self.kept_fn(frame_idx, obj_key)] = 1.0
        return marks

    def score(self, tokens, semantic, uncertainty, prior):
        return semantic

    def select(self, scores, prior, k):
        kept = scores[0].nonzero().squeeze(1)
        assert kept.numel() == k, (kept.numel(), k)
        return kept


class _MaskedFunctional:
    """``torch.nn.functional`` whose attention masks keys by key count (self vs cross)."""

    def __init__(self, masks_by_num_keys: dict[int, Tensor]) -> None:
        self.masks = masks_by_num_keys

    def __getattr__(self, name):
        return getattr(F, name)

    def scaled_dot_product_attention(self, q, k, v, *args, **kwargs):
        mask = self.masks[k.shape[-2]]  # KeyError = an attention this reference does not know
        return F.scaled_dot_product_attention(q, k, v, *args, attn_mask=mask.view(1, 1, 1, -1), **kwargs)


@contextmanager
def _masked_attention(masks_by_num_keys: dict[int, Tensor]):
    saved = sam_transformer.F
    sam_transformer.F = _MaskedFunctional(masks_by_num_keys)
    try:
        yield
    finally:
        sam_transformer.F = saved


class _Captured(Exception):
    pass


class ReferencePrunedPredictor(SAM2VideoPredictor):
    """Stock SAM2, full-grid bank, pruning expressed as attention masks (slow, clear)."""

    kept_fn: KeptFn

    def keep_mask(self, frame_idx: int, obj_idx: int, num_tokens: int) -> Tensor:
        mask = torch.zeros(num_tokens, dtype=torch.bool)
        mask[self.kept_fn(frame_idx, obj_idx)] = True
        return mask

    def _run_single_frame_inference(self, inference_state, output_dict, *args, **kwargs):
        self._obj_idx = next(i for i, d in inference_state["output_dict_per_obj"].items() if d is output_dict)
        return super()._run_single_frame_inference(inference_state, output_dict, *args, **kwargs)

    def _memory_key_mask(self, args: tuple, output_dict, obj_idx: int, grid: tuple[int, int], B: int) -> Tensor:
        """Keep-mask of every memory token stock SAM2 would attend to, in its order."""
        H, W = grid
        probe = {
            key: {
                t: {**out, "maskmem_features": self.keep_mask(t, obj_idx, H * W).float()
                    .view(1, 1, H, W).expand(B, self.mem_dim, H, W)}
                for t, out in output_dict[key].items()
            }
            for key in ("cond_frame_outputs", "non_cond_frame_outputs")
        }
        captured: dict = {}

        def grab(_module, _args, kwargs):
            captured.update(kwargs)
            raise _Captured

        handle = self.memory_attention.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            frame_idx, is_init, feats, pos, sizes, _, num_frames, reverse = args
            super()._prepare_memory_conditioned_features(frame_idx, is_init, feats, pos, sizes, probe,
                                                         num_frames, reverse)
        except _Captured:
            pass
        finally:
            handle.remove()
        memory, n_ptr = captured["memory"], captured["num_obj_ptr_tokens"]
        spatial = memory[: memory.shape[0] - n_ptr, 0, 0] > 0.5
        return torch.cat([spatial, torch.ones(n_ptr, dtype=torch.bool)])

    def _prepare_memory_conditioned_features(self, frame_idx, is_init_cond_frame, current_vision_feats,
                                             current_vision_pos_embeds, feat_sizes, output_dict, num_frames,
                                             track_in_reverse=False):
        args = (frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds, feat_sizes,
                output_dict, num_frames, track_in_reverse)
        if is_init_cond_frame:
            return super()._prepare_memory_conditioned_features(*args)
        H, W = feat_sizes[-1]
        raw = current_vision_feats[-1]  # [HW, B, C]
        B, C = raw.shape[1], raw.shape[2]
        query_keep = self.keep_mask(frame_idx, self._obj_idx, H * W)
        key_keep = self._memory_key_mask(args, output_dict, self._obj_idx, (H, W), B)
        assert key_keep.numel() != H * W
        with _masked_attention({H * W: query_keep, key_keep.numel(): key_keep}):
            attended = super()._prepare_memory_conditioned_features(*args)
        no_memory = (raw + self.no_mem_embed).permute(1, 2, 0).view(B, C, H, W)
        return torch.where(query_keep.view(1, 1, H, W), attended, no_memory)
