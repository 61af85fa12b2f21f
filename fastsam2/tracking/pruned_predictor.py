"""SAM2 video predictor with text-driven token pruning before memory attention.

``PrunedSAM2VideoPredictor`` subclasses sam2's ``SAM2VideoPredictor`` and keeps
its public API (``init_state`` / ``add_new_points_or_box`` /
``propagate_in_video``); it is built by our loader with
``predictor_target="fastsam2.tracking.pruned_predictor.PrunedSAM2VideoPredictor"``
so it loads exactly the stock weights. Per frame and object:

1. the image encoder runs unchanged (forward hooks record MLP activations of
   blocks 3-5 for the router's uncertainty signal, observe-only);
2. the router scores the frame's tokens and keeps ``keep_ratio`` of them (the
   previous mask's tokens, dilated, first);
3. memory attention runs on the kept tokens only, against each memory frame's
   own kept tokens, with RoPE frequencies gathered by index
   (:mod:`fastsam2.tracking.subset_attention`);
4. the mask decoder gets a dense grid back: kept positions carry the
   memory-conditioned tokens, pruned ones ``raw + no_mem_embed`` (what SAM2 feeds
   the decoder on initial conditioning frames);
5. the memory encoder runs dense (it is convolutional) and the frame's memory
   keeps only its kept tokens: ``maskmem_features`` [B, 64, k] (bf16) plus
   ``maskmem_indices`` [k] (int16), stored in the frame's own output dict, so
   evicting that dict evicts its memory.

With ``keep_ratio=1.0`` (the default) every step is sam2's own code and the
outputs are bit-identical to the stock predictor; the only addition is timers
around the components (``inference_state["fastsam2_stats"]``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from sam2.modeling.sam2_utils import get_1d_sine_pe, select_closest_cond_frames
from sam2.sam2_video_predictor import SAM2VideoPredictor
from torch import Tensor

from fastsam2.schema import COMPONENTS
from fastsam2.tracking.memory_bank import INDICES_KEY
from fastsam2.tracking.router import Router, RouterConfig
from fastsam2.tracking.runtime import ComponentTimer, autocast_context, compile_modules, enable_tf32, resolve_precision
from fastsam2.tracking.signals import capture_encoder_taps, prior_from_masks
from fastsam2.tracking.sparse_encoder import (
    ENCODER_CACHE_KEY,
    EncoderCache,
    EncoderSparsityConfig,
    SparseHieraEncoder,
    sam_forward_image,
)
from fastsam2.tracking.subset_attention import memory_attention_subset

log = logging.getLogger(__name__)

#: Keys this module adds to a sam2 inference state.
STATS_KEY = "fastsam2_stats"  # {frame_idx: {"ms_<component>": float, "tokens_kept": int, ...}}
ROUTER_CACHE_KEY = "fastsam2_router"  # per-video router cache (uncertainty, keyframe semantics)
TEXT_KEY = "fastsam2_text"  # the video's text phrase (or None)
OBJECT_TEXT_KEY = "fastsam2_object_text"  # {obj_id: phrase}: an object's own text, over the video's
#: Key added to per-frame output dicts: flat indices of the stored memory tokens (None = dense).

PREDICTOR_TARGET = "fastsam2.tracking.pruned_predictor.PrunedSAM2VideoPredictor"


def empty_frame_stats() -> dict[str, float | int]:
    """A zeroed per-frame stats record (component times accumulate over objects)."""
    stats: dict[str, float | int] = {f"ms_{c}": 0.0 for c in COMPONENTS}
    stats.update(tokens_kept=0, tokens_total=0, tokens_prior=0)
    return stats


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU flash SDPA, which ``torch.utils.flop_counter`` does not count by default."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _mv_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of a matrix-vector product (the closed-form uncertainty uses one)."""
    return 2 * a_shape[0] * a_shape[1]


class _GlobalOnly:
    """Stands in for ``FlopCounterMode``'s module tracker: totals only.

    The tracker hooks every module call to attribute FLOPs per module and, on
    inputs that require grad, registers autograd hooks, which fails inside
    SAM2's inference-mode preflight; the predictor only needs totals.
    """

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _CountingFlops:
    """``FlopCounterMode`` with ``nn.MultiheadAttention``'s fused inference fast path off.

    The fast path runs as one native op the counter has no formula for, so CLIP's
    attention blocks would count as MLPs only (a third low on ViT-B/16); with it
    off, MHA runs as projections plus SDPA, which are counted.
    """

    def __init__(self, counter) -> None:
        self.counter = counter
        self._saved: bool | None = None

    def get_total_flops(self) -> int:
        return self.counter.get_total_flops()

    def __enter__(self):
        self._saved = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        self.counter.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            return self.counter.__exit__(*exc)
        finally:
            torch.backends.mha.set_fastpath_enabled(bool(self._saved))


def flop_counter() -> _CountingFlops:
    """A FLOP counter (context manager with ``get_total_flops()``) that also counts CPU
    attention, matrix-vector products and ``nn.MultiheadAttention`` (fast path off
    while counting), besides torch's own matmul and convolution formulas."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.mv: _mv_flops}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    counter.mod_tracker = _GlobalOnly()
    return _CountingFlops(counter)


@dataclass
class _FrameCtx:
    """What the overridden steps need to know about the call in progress."""

    inference_state: dict[str, Any]
    frame_idx: int
    obj_idx: int | None = None
    kept: Tensor | None = None


class PrunedSAM2VideoPredictor(SAM2VideoPredictor):
    """``SAM2VideoPredictor`` whose memory attention runs on router-selected tokens.

    Configure after building with :meth:`configure_pruning`; set a video's text
    with :meth:`set_video_text`. Not thread-safe (one video at a time per
    instance, like the stock predictor).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keep_ratio: float = 1.0
        self.router: Router | None = None
        self.collect_stats: bool = True
        self.count_flops: bool = False
        self.subset_at_full_keep: bool = False
        self._ctx: _FrameCtx | None = None
        self._taps = None
        self.sparse_encoder: SparseHieraEncoder | None = None  # opt-in (configure_encoder_sparsity)
        self._encoding: _FrameCtx | None = None  # the frame the image encoder is running on
        self.precision: str = "fp32"  # configure_runtime
        self.profile: bool = False
        self._timer: ComponentTimer | None = None

    # ---- public configuration ---------------------------------------------------------------
    def configure_pruning(
        self,
        keep_ratio: float = 0.3,
        router: Router | None = None,
        *,
        collect_stats: bool = True,
        count_flops: bool = False,
        subset_at_full_keep: bool = False,
    ) -> PrunedSAM2VideoPredictor:
        """Set the share of tokens kept per frame and the router that picks them.

        ``keep_ratio=1.0`` is dense: sam2's own code path (bit-identical to stock)
        unless ``subset_at_full_keep`` forces the pruned code path with every
        token kept (used to test that path's exactness). Without a ``router`` a
        training-free one without text relevance is used (prior + uncertainty +
        context). ``count_flops`` adds ``gflops_<component>`` to the stats
        (slow: for benchmarks).
        """
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
        if router is None and (keep_ratio < 1.0 or subset_at_full_keep):
            router = Router(RouterConfig(semantic="none"))
        expected = router.meta.get("sam2_config") if router is not None else None
        mine = getattr(self, "config_name", None)
        if expected and mine and expected != mine:
            log.warning("router weights were trained on %s, this predictor is %s", expected, mine)
        self.keep_ratio = float(keep_ratio)
        self.router = router
        self.collect_stats = collect_stats
        self.count_flops = count_flops
        self.subset_at_full_keep = subset_at_full_keep
        return self

    def set_video_text(self, inference_state: dict[str, Any], text: str | None) -> None:
        """Set (or clear, with None) the phrase the router scores relevance against."""
        inference_state[TEXT_KEY] = text.strip() if isinstance(text, str) and text.strip() else None
        inference_state.setdefault(ROUTER_CACHE_KEY, {}).pop("semantic", None)

    def configure_encoder_sparsity(self, config: EncoderSparsityConfig | None) -> PrunedSAM2VideoPredictor:
        """Opt into the sparse image encoder (:mod:`fastsam2.tracking.sparse_encoder`); None
        or ``mode="off"`` restores the stock encoder."""
        active = config is not None and config.active
        self.sparse_encoder = SparseHieraEncoder(self.image_encoder, config) if active else None
        return self

    def set_object_text(self, inference_state: dict[str, Any], obj_id: int, text: str | None) -> None:
        """Give one object its own phrase (its router text relevance); None falls back to the video's."""
        texts = inference_state.setdefault(OBJECT_TEXT_KEY, {})
        if isinstance(text, str) and text.strip():
            texts[obj_id] = text.strip()
        else:
            texts.pop(obj_id, None)

    def _object_text(self, state: dict[str, Any], obj_idx: int | None) -> str | None:
        texts = state.get(OBJECT_TEXT_KEY) or {}
        if obj_idx is not None and texts:
            obj_id = state.get("obj_idx_to_id", {}).get(obj_idx)
            if texts.get(obj_id):
                return texts[obj_id]
        return state.get(TEXT_KEY)

    def configure_runtime(self, precision: str = "auto", *, profile: bool = False,
                          compile: bool = False) -> PrunedSAM2VideoPredictor:
        """Precision (``auto|fp32|bf16|fp16``), stall-free or exact (``profile``) component
        timers, and optional ``torch.compile`` (:mod:`fastsam2.tracking.runtime`)."""
        self.precision = resolve_precision(precision, self.device)
        enable_tf32(self.precision, self.device)
        self.profile = profile
        self._timer = None
        if compile:
            compile_modules(self)
        return self

    @property
    def timer(self) -> ComponentTimer:
        """The component timer for the device the model is on now (built on first use,
        since the model is moved to its device after construction)."""
        if self._timer is None or self._timer.device != self.device:
            self._timer = ComponentTimer(self.device, profile=self.profile)
        return self._timer

    def _autocast(self):
        """The one autocast context of tracking (a no-op in fp32)."""
        return autocast_context(self.precision, self.device)

    @property
    def pruning_active(self) -> bool:
        return self.router is not None and (self.keep_ratio < 1.0 or self.subset_at_full_keep)

    @torch.inference_mode()
    def init_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().init_state(*args, **kwargs)
        state.setdefault(STATS_KEY, {})
        state.setdefault(ROUTER_CACHE_KEY, {})
        state.setdefault(TEXT_KEY, None)
        return state

    # ---- stats -----------------------------------------------------------------------------
    def _frame_stats(self, inference_state: dict[str, Any], frame_idx: int) -> dict[str, Any]:
        per_frame = inference_state.setdefault(STATS_KEY, {})
        if frame_idx not in per_frame:
            per_frame[frame_idx] = empty_frame_stats()
        return per_frame[frame_idx]

    @contextmanager
    def _timed(self, component: str, ctx: _FrameCtx | None = None) -> Iterator[None]:
        ctx = ctx or self._ctx
        if ctx is None or not self.collect_stats:
            yield
            return
        stats = self._frame_stats(ctx.inference_state, ctx.frame_idx)
        counter = flop_counter() if self.count_flops else nullcontext()
        with self.timer.time(stats, f"ms_{component}"), counter:
            yield
        if self.count_flops:
            key = f"gflops_{component}"
            stats[key] = stats.get(key, 0.0) + counter.get_total_flops() / 1e9

    def _count_tokens(self, ctx: _FrameCtx | None, kept: int, total: int, prior: int = 0) -> None:
        if ctx is None or not self.collect_stats:
            return
        stats = self._frame_stats(ctx.inference_state, ctx.frame_idx)
        stats["tokens_kept"] += int(kept)
        stats["tokens_total"] += int(total)
        stats["tokens_prior"] += int(prior)

    # ---- image encoder: timer + router taps --------------------------------------------------
    def forward_image(self, img_batch: Tensor):
        if self.sparse_encoder is not None and self._encoding is not None:
            return self._forward_image_sparse(img_batch, self._encoding)
        router = self.router if self.pruning_active else None
        if router is None or not (router.needs_hidden_taps or router.needs_block_input):
            return super().forward_image(img_batch)
        with capture_encoder_taps(
            self.image_encoder.trunk,
            router.config.uncertainty_blocks,
            hidden=router.needs_hidden_taps,
            block_input=router.needs_block_input,
        ) as taps:
            out = super().forward_image(img_batch)
        self._taps = taps
        return out

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        if frame_idx in inference_state["cached_features"]:
            return super()._get_image_feature(inference_state, frame_idx, batch_size)
        ctx = _FrameCtx(inference_state, frame_idx)
        self._taps = None
        stats = self._frame_stats(inference_state, frame_idx)
        stats["encoder_calls"] = stats.get("encoder_calls", 0) + 1  # shared by all objects: must stay 1
        self._encoding = ctx
        try:
            with self._autocast(), self._timed("image_encoder", ctx):
                features = super()._get_image_feature(inference_state, frame_idx, batch_size)
        finally:
            self._encoding = None
        taps, self._taps = self._taps, None
        if taps is not None and self.router is not None:
            with self._timed("router", ctx):
                grid = (self.sam_image_embedding_size, self.sam_image_embedding_size)
                unc = self.router.uncertainty_from_taps(taps, self.image_encoder.trunk, grid)
            if unc is not None:
                cache = inference_state.setdefault(ROUTER_CACHE_KEY, {})
                cache["uncertainty"] = {frame_idx: unc[:1]}  # same for every object: keep one row
        return features

    # ---- sparse image encoder (opt-in) ---------------------------------------------------------
    def _forward_image_sparse(self, img_batch: Tensor, ctx: _FrameCtx):
        """Encode with the per-video activation cache; router taps come from the encoder itself."""
        state = ctx.inference_state
        cache = state.get(ENCODER_CACHE_KEY)
        if cache is None:
            cache = state[ENCODER_CACHE_KEY] = EncoderCache()
        router = self.router if self.pruning_active else None
        tap_blocks = ()
        if router is not None and (router.needs_hidden_taps or router.needs_block_input):
            tap_blocks = tuple(router.config.uncertainty_blocks)
        prior = self._encoder_prior(state, ctx.frame_idx) if self.sparse_encoder.config.object else None
        backbone_out, taps, enc = self.sparse_encoder.encode(img_batch, cache, prior, tap_blocks)
        self._taps = taps if tap_blocks else None
        if self.collect_stats:
            stats = self._frame_stats(state, ctx.frame_idx)
            stats["encoder_tokens_recomputed"] = stats.get("encoder_tokens_recomputed", 0) + enc.tokens_recomputed
            stats["encoder_tokens_total"] = stats.get("encoder_tokens_total", 0) + enc.tokens_total
            stats["encoder_full"] = int(enc.full)
            stats["encoder_reason"] = enc.reason
        return sam_forward_image(self, backbone_out)

    def _encoder_prior(self, inference_state: dict[str, Any], frame_idx: int) -> Tensor | None:
        """Where the tracked objects are: every object's closest tracked mask, dilated, union
        (bool [S, S] on the SAM token grid); None when no object has a mask yet."""
        grid = (self.sam_image_embedding_size, self.sam_image_embedding_size)
        dilation = self.sparse_encoder.config.object_dilation if self.sparse_encoder else 2
        union = None
        for output_dict in inference_state["output_dict_per_obj"].values():
            logits = self._prior_logits(output_dict, frame_idx, False)
            if logits is None:
                logits = self._prior_logits(output_dict, frame_idx, True)
            if logits is None:
                continue
            tok = prior_from_masks(logits.float(), grid, dilation).any(0).view(grid)
            union = tok if union is None else union | tok.to(union.device)
        return union

    @torch.inference_mode()
    def add_new_points_or_box(self, *args: Any, **kwargs: Any):
        """Stock prompting, under the run's precision."""
        with self._autocast():
            return super().add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def propagate_in_video(self, inference_state, *args: Any, **kwargs: Any):
        """Stock propagation, each step under the run's precision (autocast is entered and
        left around every step, never held across a ``yield``); the frame's component
        times are read once per frame; the sparse encoder's activation cache is dropped
        when it ends."""
        steps = super().propagate_in_video(inference_state, *args, **kwargs)
        try:
            while True:
                with self._autocast():
                    item = next(steps, None)
                if item is None:
                    return
                self.timer.flush()
                yield item
        finally:
            steps.close()
            self.timer.flush()
            inference_state.pop(ENCODER_CACHE_KEY, None)

    # ---- per-frame call: context, then compact the memory -------------------------------------
    def _run_single_frame_inference(self, inference_state, output_dict, frame_idx, batch_size,
                                    is_init_cond_frame, point_inputs, mask_inputs, reverse,
                                    run_mem_encoder, prev_sam_mask_logits=None):
        obj_idx = next(
            (i for i, d in inference_state["output_dict_per_obj"].items() if d is output_dict), None
        )
        ctx = _FrameCtx(inference_state, frame_idx, obj_idx)
        outer, self._ctx = self._ctx, ctx
        try:
            compact, pred_masks = super()._run_single_frame_inference(
                inference_state, output_dict, frame_idx, batch_size, is_init_cond_frame,
                point_inputs, mask_inputs, reverse, run_mem_encoder, prev_sam_mask_logits,
            )
            if compact["maskmem_features"] is not None and self.pruning_active:
                kept = ctx.kept
                if kept is None:
                    kept = self._select_for_memory(ctx, compact["pred_masks"])
                self._compact_memory(compact, kept)
        finally:
            self._ctx = outer
        return compact, pred_masks

    def _run_memory_encoder(self, inference_state, frame_idx, batch_size, high_res_masks,
                            object_score_logits, is_mask_from_pts):
        outer, self._ctx = self._ctx, _FrameCtx(inference_state, frame_idx)
        try:
            return super()._run_memory_encoder(
                inference_state, frame_idx, batch_size, high_res_masks, object_score_logits, is_mask_from_pts
            )
        finally:
            self._ctx = outer

    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state):
        """Stock preflight (encodes memory of prompted frames, dense), then prune that memory."""
        super().propagate_in_video_preflight(inference_state)
        if not self.pruning_active:
            return
        for obj_idx, obj_out in inference_state["output_dict_per_obj"].items():
            for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
                for t, out in obj_out[key].items():
                    if out.get("maskmem_features") is None or INDICES_KEY in out:
                        continue
                    ctx = _FrameCtx(inference_state, t, obj_idx)
                    outer, self._ctx = self._ctx, ctx
                    try:
                        self._compact_memory(out, self._select_for_memory(ctx, out["pred_masks"]))
                    finally:
                        self._ctx = outer

    def _compact_memory(self, out: dict[str, Any], kept: Tensor) -> None:
        """Keep only the kept tokens of a frame's memory (+ their int16 indices)."""
        feats = out["maskmem_features"]
        n = feats.shape[-2] * feats.shape[-1] if feats.dim() == 4 else feats.shape[-1]
        if kept.numel() >= n or feats.dim() != 4:
            out.setdefault(INDICES_KEY, None)
            return
        kept_dev = kept.to(feats.device)
        out["maskmem_features"] = feats.flatten(2).index_select(2, kept_dev).contiguous()
        dtype = torch.int16 if n <= torch.iinfo(torch.int16).max else torch.int32
        out[INDICES_KEY] = kept_dev.to(dtype)

    def _select_for_memory(self, ctx: _FrameCtx, own_masks: Tensor) -> Tensor:
        """Kept tokens of a frame that did not go through routing (prompted frames):
        its own predicted mask is the prior."""
        _, _, feats, _, sizes = self._get_image_feature(ctx.inference_state, ctx.frame_idx, 1)
        H, W = sizes[-1]
        with self._timed("router", ctx):
            kept, _ = self._route(ctx, feats[-1], (H, W), own_masks)
        return kept

    # ---- router ----------------------------------------------------------------------------
    def _prior_logits(self, output_dict, frame_idx: int, reverse: bool) -> Tensor | None:
        """Mask logits of the closest already-tracked frame before this one (in tracking order)."""
        step = 1 if reverse else -1
        dicts = (output_dict["cond_frame_outputs"], output_dict["non_cond_frame_outputs"])
        for d in dicts:
            if frame_idx + step in d:
                return d[frame_idx + step].get("pred_masks")
        best = None
        for d in dicts:
            for t in d:
                if (t > frame_idx if reverse else t < frame_idx) and (
                    best is None or abs(t - frame_idx) < abs(best[0] - frame_idx)
                ):
                    best = (t, d[t])
        return best[1].get("pred_masks") if best is not None else None

    def _route(self, ctx: _FrameCtx | None, feats: Tensor, grid: tuple[int, int],
               prior_logits: Tensor | None) -> tuple[Tensor, int]:
        """Kept indices for this frame's tokens ``feats`` [HW, B, C]; returns (indices, #prior)."""
        router = self.router
        assert router is not None
        n = grid[0] * grid[1]
        k = max(1, int(round(self.keep_ratio * n)))
        tokens = feats.permute(1, 0, 2)  # [B, HW, C]
        prior = None
        if prior_logits is not None:
            prior = prior_from_masks(prior_logits.to(feats.device), grid, router.config.prior_dilation)
        state = ctx.inference_state if ctx is not None else {}
        cache = state.setdefault(ROUTER_CACHE_KEY, {}) if ctx is not None else {}
        frame_idx = ctx.frame_idx if ctx is not None else -1
        unc = cache.get("uncertainty", {}).get(frame_idx)

        def image() -> Tensor | None:
            cached = state.get("cached_features", {}).get(frame_idx)
            return cached[0] if cached is not None else None

        text = self._object_text(state, ctx.obj_idx if ctx else None)
        sem = router.semantic_map(
            cache, frame_idx, ctx.obj_idx if ctx else None, tokens, text, image, grid,
            prior.any(0, keepdim=True) if prior is not None else None,
        )
        scores = router.score(
            tokens,
            sem.expand(tokens.shape[0], -1) if sem is not None else None,
            unc.expand(tokens.shape[0], -1) if unc is not None else None,
            prior,
        )
        kept = router.select(scores, prior, k)
        n_prior = int(prior.any(0)[kept].sum()) if prior is not None else 0
        return kept, n_prior

    # ---- components --------------------------------------------------------------------------
    def _forward_sam_heads(self, *args, **kwargs):
        with self._timed("decoder"):
            return super()._forward_sam_heads(*args, **kwargs)

    def _encode_new_memory(self, *args, **kwargs):
        with self._timed("memory_encoder"):
            return super()._encode_new_memory(*args, **kwargs)

    def _prepare_memory_conditioned_features(self, frame_idx, is_init_cond_frame, current_vision_feats,
                                             current_vision_pos_embeds, feat_sizes, output_dict,
                                             num_frames, track_in_reverse=False):
        ctx = self._ctx
        H, W = feat_sizes[-1]
        B = current_vision_feats[-1].size(1)
        pruned_memory = any(
            out.get(INDICES_KEY) is not None
            for key in ("cond_frame_outputs", "non_cond_frame_outputs")
            for out in output_dict[key].values()
        )
        if is_init_cond_frame or self.num_maskmem == 0 or not (self.pruning_active or pruned_memory):
            with self._timed("memory_attention"):
                pix = super()._prepare_memory_conditioned_features(
                    frame_idx, is_init_cond_frame, current_vision_feats, current_vision_pos_embeds,
                    feat_sizes, output_dict, num_frames, track_in_reverse,
                )
            self._count_tokens(ctx, H * W * B, H * W * B)
            return pix

        feats = current_vision_feats[-1]
        if self.pruning_active:
            with self._timed("router"):
                kept, n_prior = self._route(
                    ctx, feats, (H, W), self._prior_logits(output_dict, frame_idx, track_in_reverse)
                )
        else:  # dense queries against memory that was stored pruned
            kept, n_prior = torch.arange(H * W, device=feats.device), 0
        with self._timed("memory_attention"):
            pix = self._pruned_memory_conditioning(
                frame_idx, feats, current_vision_pos_embeds[-1], (H, W), output_dict, num_frames,
                track_in_reverse, kept,
            )
        if ctx is not None:
            ctx.kept = kept
        self._count_tokens(ctx, kept.numel() * B, H * W * B, n_prior * B)
        return pix

    # ---- the pruned memory-conditioning step --------------------------------------------------
    def _memory_frames(self, frame_idx: int, output_dict, track_in_reverse: bool):
        """Which memory frames to attend to, with their temporal position (as in stock SAM2)."""
        cond_outputs = output_dict["cond_frame_outputs"]
        assert len(cond_outputs) > 0
        selected, unselected = select_closest_cond_frames(frame_idx, cond_outputs, self.max_cond_frames_in_attn)
        t_pos_and_prevs = [(0, out) for out in selected.values()]
        stride = 1 if self.training else self.memory_temporal_stride_for_eval
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos
            if t_rel == 1:
                prev_frame_idx = frame_idx + t_rel if track_in_reverse else frame_idx - t_rel
            elif not track_in_reverse:
                prev_frame_idx = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev_frame_idx = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            out = output_dict["non_cond_frame_outputs"].get(prev_frame_idx, None)
            if out is None:
                out = unselected.get(prev_frame_idx, None)
            t_pos_and_prevs.append((t_pos, out))
        return t_pos_and_prevs, selected, unselected

    def _object_pointers(self, frame_idx, output_dict, num_frames, track_in_reverse, selected, unselected,
                         B, device):
        """Object-pointer tokens and their position embeddings (as in stock SAM2)."""
        C = self.hidden_dim
        max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
            ptr_cond = {t: o for t, o in selected.items() if (t >= frame_idx if track_in_reverse else t <= frame_idx)}
        else:
            ptr_cond = selected
        sign = -1 if track_in_reverse else 1
        pos_and_ptrs = [
            ((frame_idx - t) * sign if self.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), o["obj_ptr"])
            for t, o in ptr_cond.items()
        ]
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            o = output_dict["non_cond_frame_outputs"].get(t, unselected.get(t, None))
            if o is not None:
                pos_and_ptrs.append((t_diff, o["obj_ptr"]))
        if not pos_and_ptrs:
            return None, None
        pos_list, ptrs_list = zip(*pos_and_ptrs, strict=True)
        obj_ptrs = torch.stack(ptrs_list, dim=0)
        if self.add_tpos_enc_to_obj_ptrs:
            t_diff_max = max_ptrs - 1
            tpos_dim = C if self.proj_tpos_enc_in_obj_ptrs else self.mem_dim
            obj_pos = torch.tensor(pos_list).to(device=device, non_blocking=True)
            obj_pos = get_1d_sine_pe(obj_pos / t_diff_max, dim=tpos_dim)
            obj_pos = self.obj_ptr_tpos_proj(obj_pos)
            obj_pos = obj_pos.unsqueeze(1).expand(-1, B, self.mem_dim)
        else:
            obj_pos = obj_ptrs.new_zeros(len(pos_list), B, self.mem_dim)
        if self.mem_dim < C:
            obj_ptrs = obj_ptrs.reshape(-1, B, C // self.mem_dim, self.mem_dim)
            obj_ptrs = obj_ptrs.permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(C // self.mem_dim, dim=0)
        return obj_ptrs, obj_pos

    def _pruned_memory_conditioning(self, frame_idx, feats, pos, grid, output_dict, num_frames,
                                    track_in_reverse, kept: Tensor) -> Tensor:
        """Memory attention on ``kept`` current tokens vs. each memory frame's kept tokens."""
        H, W = grid
        HW, B, C = feats.shape
        device = feats.device
        t_pos_and_prevs, selected, unselected = self._memory_frames(frame_idx, output_dict, track_in_reverse)
        memory, memory_pos, memory_idx = [], [], []
        for t_pos, prev in t_pos_and_prevs:
            if prev is None:
                continue
            m = prev["maskmem_features"].to(device, non_blocking=True)
            memory.append(m.flatten(2).permute(2, 0, 1))
            enc = prev["maskmem_pos_enc"][-1].to(device).flatten(2)
            m_idx = prev.get(INDICES_KEY)
            if m_idx is not None:
                m_idx = m_idx.to(device=device, dtype=torch.long)
                enc = enc.index_select(2, m_idx)
            enc = enc.permute(2, 0, 1) + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1]
            memory_pos.append(enc)
            memory_idx.append(m_idx)
        num_ptr = 0
        if self.use_obj_ptrs_in_encoder:
            ptrs, ptr_pos = self._object_pointers(
                frame_idx, output_dict, num_frames, track_in_reverse, selected, unselected, B, device
            )
            if ptrs is not None:
                memory.append(ptrs)
                memory_pos.append(ptr_pos)
                num_ptr = ptrs.shape[0]
        memory_t = torch.cat(memory, dim=0)
        memory_pos_t = torch.cat(memory_pos, dim=0)

        dense = kept.numel() == HW
        if dense:
            curr, curr_pos, curr_idx = feats, pos, None
        else:
            kept = kept.to(device)
            curr, curr_pos, curr_idx = feats.index_select(0, kept), pos.index_select(0, kept), kept
        out = memory_attention_subset(
            self.memory_attention, curr, curr_pos, memory_t, memory_pos_t, curr_idx, memory_idx, grid, num_ptr
        )
        if not dense:
            # Pruned positions get what SAM2 feeds the decoder on memory-less frames.
            full = (feats + self.no_mem_embed).to(out.dtype)
            out = full.index_copy(0, kept, out)
        return out.permute(1, 2, 0).view(B, C, H, W)
