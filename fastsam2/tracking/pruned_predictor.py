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
outputs are bit-identical to the stock predictor; the only additions are the
run's precision (autocast, :mod:`fastsam2.tracking.runtime`) and timers around
the components (``inference_state[STATS_KEY]``, :mod:`fastsam2.tracking.instrument`).
The pruned memory-conditioning step itself lives in
:mod:`fastsam2.tracking.memory_conditioning`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor
from torch import Tensor

from fastsam2.tracking.instrument import (
    ENCODER_CALLS,
    STATS_KEY,
    ComponentTimer,
    count_tokens,
    frame_stats,
    timed,
)
from fastsam2.tracking.memory_bank import INDICES_KEY
from fastsam2.tracking.memory_conditioning import (
    ConditioningRequest,
    condition,
    condition_streams,
    prepare_conditioning,
)
from fastsam2.tracking import rendezvous
from fastsam2.tracking.position_encoding import broadcast_image_positions, cache_trunk_positions
from fastsam2.tracking.router import Router, RouterConfig
from fastsam2.tracking.runtime import autocast_context, compile_modules, enable_tf32, resolve_precision
from fastsam2.tracking.signals import capture_encoder_taps, prior_from_masks
from fastsam2.tracking.sparse_encoder import (
    ENCODER_CACHE_KEY,
    EncoderCache,
    EncoderSparsityConfig,
    SparseHieraEncoder,
    sam_forward_image,
)


#: Keys this module adds to a sam2 inference state (besides ``instrument.STATS_KEY``).
ROUTER_CACHE_KEY = "fastsam2_router"  # per-video router cache (uncertainty, keyframe semantics)
TEXT_KEY = "fastsam2_text"  # the video's text phrase (or None)
OBJECT_TEXT_KEY = "fastsam2_object_text"  # {obj_id: phrase}: an object's own text, over the video's


def encoder_batches_on(device: torch.device) -> bool:
    """Whether frames of several videos share one image-encoder call on ``device`` (the one
    rule; :attr:`PrunedSAM2VideoPredictor.batches_encoder` applies it).

    On a GPU one frame at batch 1 leaves most of the chip idle, and stacking the live
    videos' frames is what videos per actor is for. On CPU one frame already keeps every
    core busy, and a batch only grows the working set: SAM2.1 hiera-t (random weights,
    fp32, 2-core Xeon, torch 2.14) ran one batch-2 ``forward_image`` 4-6% slower than two
    batch-1 calls at both 512 px (0.83 s vs 0.79 s median of 12) and 1024 px (3.99 s vs
    3.77 s median of 5), which made several videos per actor slower than one at a time.
    So on CPU the lockstep engine encodes each video's frame in a call of its own.
    """
    return torch.device(device).type != "cpu"


def attention_batches_on(device: torch.device) -> bool:
    """Whether streams (a video's objects, lockstep videos) share one pruned memory-attention
    call on ``device`` (the one rule; :attr:`PrunedSAM2VideoPredictor.batches_attention`
    applies it).

    On a GPU each stream alone is a small kernel launch sequence (k of about 1,200 queries
    at 1024 px, keep 0.3), and one call over every stream is what fills the chip. On CPU
    one stream already keeps the cores busy: with five objects at 1024 px (SAM2.1 hiera-t,
    random weights, fp32, 2-core Xeon, torch 2.14) the batched call's attention kernels were
    ~15% faster but its projections, MLP and activations, whose working set of five streams
    falls out of cache, ~20% slower, 2-7% slower in all (1379-1451 vs 1332-1352 ms per frame
    over four runs); at 512 px the two were even (198-206 ms). So on CPU each stream runs
    its own call, one after another, as sam2 runs them.
    """
    return torch.device(device).type != "cpu"


def _batch_rows(backbone_out: dict[str, Any], i: int) -> dict[str, Any]:
    """Row ``i`` of a batched ``forward_image`` output (tensors and lists of tensors)."""
    return {
        key: [x[i:i + 1] for x in value] if isinstance(value, list)
        else value[i:i + 1] if isinstance(value, Tensor) else value
        for key, value in backbone_out.items()
    }


class _PerThread:
    """An attribute with one value per thread: a video's objects and lockstep videos step on
    worker threads (:mod:`fastsam2.tracking.rendezvous`: one at a time, switching where they
    wait for the batched attention), and each keeps its own call-in-progress state."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.__dict__.get("_fastsam2_per_thread"), self.name, None)

    def __set__(self, obj: Any, value: Any) -> None:
        local = obj.__dict__.get("_fastsam2_per_thread")
        if local is None:
            local = obj.__dict__["_fastsam2_per_thread"] = threading.local()
        setattr(local, self.name, value)


@dataclass
class _FrameCtx:
    """What the overridden steps need to know about the call in progress."""

    inference_state: dict[str, Any]
    frame_idx: int
    obj_idx: int | None = None
    kept: Tensor | None = None


class _Propagation:
    """One ``propagate_in_video`` run: on each frame, every object that frame tracks steps
    together on the first object's call (sam2's loop asks object by object; the others'
    results wait here for their turn). The objects' steps are independent (each reads its
    own memory and the frame's shared features), so stepping them together changes no
    result: it lets their memory attention run as one call (:mod:`fastsam2.tracking.rendezvous`).

    ``num_objects`` is sam2's ``batch_size`` for the run (fixed when it starts): an object
    added while the run is suspended is not one its loop asks for, so it is not stepped."""

    def __init__(self, num_objects: int) -> None:
        self.num_objects = num_objects
        self.rendezvous: rendezvous.Rendezvous | None = None
        self.frame: tuple[int, bool] | None = None
        self.results: dict[int, tuple[Any, BaseException | None]] = {}

    def result(self, predictor: PrunedSAM2VideoPredictor, inference_state: dict[str, Any], frame_idx: int,
               reverse: bool, obj_idx: int):
        if self.frame != (frame_idx, reverse) or obj_idx not in self.results:
            # The objects this frame tracks, as sam2's loop picks them (prompted frames are not tracked).
            due = [i for i, out in sorted(inference_state["output_dict_per_obj"].items())
                   if obj_idx <= i < self.num_objects and frame_idx not in out["cond_frame_outputs"]]
            modes = _ThreadModes.of(predictor.device)
            if len(due) < 2:
                self.frame, self.results = None, {}
                return predictor._object_step(inference_state, frame_idx, reverse, obj_idx, modes)
            predictor._get_image_feature(inference_state, frame_idx, 1)  # encoded once, on this thread
            if self.rendezvous is None:
                self.rendezvous = rendezvous.Rendezvous(predictor, "object-step")
            outcomes = self.rendezvous.run_all(
                [lambda i=i: predictor._object_step(inference_state, frame_idx, reverse, i, modes) for i in due]
            )
            self.frame, self.results = (frame_idx, reverse), dict(zip(due, outcomes, strict=True))
        value, raised = self.results.pop(obj_idx)
        if raised is not None:
            self.results = {}
            raise raised
        return value

    def close(self) -> None:
        if self.rendezvous is not None:
            self.rendezvous.close()
            self.rendezvous = None


@dataclass(frozen=True)
class _ThreadModes:
    """The calling thread's torch modes (all per thread in torch), to run a step on another
    thread exactly as it would have run here: under the caller's own autocast too (a user
    may wrap propagation in ``torch.autocast`` as sam2's README does), not only ours."""

    device_type: str
    inference: bool
    grad: bool
    autocast: bool
    autocast_dtype: torch.dtype

    @classmethod
    def of(cls, device: torch.device) -> _ThreadModes:
        kind = torch.device(device).type
        return cls(kind, torch.is_inference_mode_enabled(), torch.is_grad_enabled(),
                   torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))

    @contextmanager
    def entered(self) -> Iterator[None]:
        with torch.inference_mode(self.inference), torch.set_grad_enabled(self.grad), \
                torch.autocast(self.device_type, dtype=self.autocast_dtype, enabled=self.autocast):
            yield


class PrunedSAM2VideoPredictor(SAM2VideoPredictor):
    """``SAM2VideoPredictor`` whose memory attention runs on router-selected tokens.

    Configure after building with :meth:`configure_pruning`; set a video's text
    with :meth:`set_video_text`. Several videos share one instance only through
    :mod:`fastsam2.tracking.lockstep`, and a video's objects step on threads of their
    own only through :mod:`fastsam2.tracking.rendezvous`; both run one thread at a
    time. It is not safe for concurrent use.
    """

    _ctx = _PerThread()  # the frame inference in progress
    _taps = _PerThread()  # router taps of the encoder call in progress
    _encoding = _PerThread()  # the frame the image encoder is running on
    _propagation = _PerThread()  # the propagate_in_video step this thread is running

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        broadcast_image_positions(self)  # the neck's encodings as views, not per-frame copies
        cache_trunk_positions(self)  # the trunk's interpolated embedding once, not per frame
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
        #: Streams (a video's objects, lockstep videos) in one pruned memory-attention call: None
        #: follows the device (:func:`attention_batches_on`); True/False force it (tests run the
        #: GPU's batched path on CPU with True).
        self.attention_batching: bool | None = None
        #: Batch the image encoder across videos: None follows the device (:func:`encoder_batches_on`);
        #: True/False force it (tests run the GPU's batched path on CPU with True).
        self.encoder_batching: bool | None = None

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
    @contextmanager
    def _timed(self, component: str, ctx: _FrameCtx | None = None) -> Iterator[None]:
        ctx = ctx or self._ctx
        if ctx is None or not self.collect_stats:
            yield
            return
        with timed(self.timer, frame_stats(ctx.inference_state, ctx.frame_idx), component, self.count_flops):
            yield

    def _count_tokens(self, ctx: _FrameCtx | None, kept: int, total: int, prior: int = 0) -> None:
        if ctx is None or not self.collect_stats:
            return
        count_tokens(frame_stats(ctx.inference_state, ctx.frame_idx), kept, total, prior)

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
        if frame_idx not in inference_state["cached_features"]:
            self.encode_frames([(inference_state, frame_idx)])
        return super()._get_image_feature(inference_state, frame_idx, batch_size)

    @property
    def batches_encoder(self) -> bool:
        """Whether frames of several videos share one image-encoder call: where it pays (on a
        GPU, not on CPU: :func:`encoder_batches_on`, unless :attr:`encoder_batching` forces it),
        and never with the sparse encoder (its activation cache is per video) nor with sampled
        MC-dropout uncertainty (its random stream would differ from one-video-at-a-time)."""
        batching = self.encoder_batching
        if not (encoder_batches_on(self.device) if batching is None else batching):
            return False
        router = self.router if self.pruning_active else None
        return self.sparse_encoder is None and not (router is not None and router.config.uncertainty == "mc")

    @torch.inference_mode()
    def encode_frames(self, frames: Sequence[tuple[dict[str, Any], int]], *, ahead: bool = False) -> None:
        """Encode frame ``t`` of each ``(inference_state, t)`` in one image-encoder call and
        cache it in that state, where sam2's ``_get_image_feature`` finds it.

        This is sam2's own cache miss (same input tensor, ``forward_image``, one cached
        frame per video) with the batch dimension spanning videos: every video's frame
        gets the rows of its own image (all videos of one predictor share the image
        size). The router's uncertainty comes from the same call's taps. ``ahead``
        (frames encoded before their video asks for them, by the lockstep engine) keeps
        the frame before ``t`` cached too, in case the video reads it once more (objects
        added on that frame). Stats: each frame counts one encoder call and an equal
        share of the call's time. Falls back to one call per video when
        :attr:`batches_encoder` is false.
        """
        frames = list(frames)
        if len(frames) > 1 and not self.batches_encoder:
            for frame in frames:
                self.encode_frames([frame], ahead=ahead)
            return
        images = [state["images"][t].to(state["device"]).float().unsqueeze(0) for state, t in frames]
        stats = [frame_stats(state, t) for state, t in frames]
        for s in stats:
            s[ENCODER_CALLS] = s.get(ENCODER_CALLS, 0) + 1  # shared by all objects: must stay 1
        self._taps = None
        self._encoding = _FrameCtx(*frames[0]) if len(frames) == 1 else None
        try:
            with self._autocast(), self._timed_shares("image_encoder", stats):
                backbone_out = self.forward_image(images[0] if len(images) == 1 else torch.cat(images))
        finally:
            self._encoding = None
        taps, self._taps = self._taps, None
        unc = None
        if taps is not None and self.router is not None:
            with self._timed_shares("router", stats):
                grid = (self.sam_image_embedding_size, self.sam_image_embedding_size)
                unc = self.router.uncertainty_from_taps(taps, self.image_encoder.trunk, grid)
        for i, (state, t) in enumerate(frames):
            own = backbone_out if len(frames) == 1 else _batch_rows(backbone_out, i)
            kept = {t - 1: state["cached_features"][t - 1]} if ahead and t - 1 in state["cached_features"] else {}
            state["cached_features"] = {**kept, t: (images[i], own)}
            if unc is not None:  # same for every object: keep one row
                state.setdefault(ROUTER_CACHE_KEY, {})["uncertainty"] = {t: unc[i:i + 1]}

    @torch.inference_mode()
    def condition_streams(self, requests: list[ConditioningRequest]) -> list[Tensor]:
        """Pruned memory conditioning of several streams (videos x objects), batched where
        shapes allow (:func:`~fastsam2.tracking.memory_conditioning.condition_streams`),
        under the run's precision; each stream's frame gets a share of the time."""
        stats = [r.stats for r in requests if r.stats is not None]
        with self._autocast(), self._timed_shares("memory_attention", stats):
            return condition_streams(self, requests)

    def _timed_shares(self, component: str, stats: list[dict[str, Any]]):
        """Time one call that serves several frames (each gets an equal share)."""
        if not self.collect_stats or not stats:
            return nullcontext()
        return timed(self.timer, stats, component, self.count_flops)

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
            stats = frame_stats(state, ctx.frame_idx)
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
        left around every step, never held across a ``yield``); where streams batch
        (:attr:`batches_attention`) a frame's objects step together (:class:`_Propagation`);
        the frame's component times are read once per frame; the sparse encoder's
        activation cache is dropped when it ends."""
        steps = super().propagate_in_video(inference_state, *args, **kwargs)
        propagation = _Propagation(self._get_obj_num(inference_state))
        try:
            while True:
                outer, self._propagation = self._propagation, propagation
                try:
                    with self._autocast():
                        item = next(steps, None)
                finally:
                    self._propagation = outer
                if item is None:
                    return
                self.timer.flush()
                yield item
        finally:
            steps.close()
            propagation.close()
            self.timer.flush()
            inference_state.pop(ENCODER_CACHE_KEY, None)

    # ---- per-frame call: context, then compact the memory -------------------------------------
    def _run_single_frame_inference(self, inference_state, output_dict, frame_idx, batch_size,
                                    is_init_cond_frame, point_inputs, mask_inputs, reverse,
                                    run_mem_encoder, prev_sam_mask_logits=None):
        obj_idx = next(
            (i for i, d in inference_state["output_dict_per_obj"].items() if d is output_dict), None
        )
        propagation = self._propagation
        tracking_step = (not is_init_cond_frame and point_inputs is None and mask_inputs is None
                         and run_mem_encoder and prev_sam_mask_logits is None)
        if propagation is not None and tracking_step and obj_idx is not None and self._steps_objects_together():
            return propagation.result(self, inference_state, frame_idx, reverse, obj_idx)
        return self._run_object(inference_state, output_dict, obj_idx, frame_idx, batch_size, is_init_cond_frame,
                                point_inputs, mask_inputs, reverse, run_mem_encoder, prev_sam_mask_logits)

    @property
    def batches_attention(self) -> bool:
        """Whether pruned streams share one memory-attention call: where it pays (on a GPU, not
        on CPU: :func:`attention_batches_on`, unless :attr:`attention_batching` forces it)."""
        batching = self.attention_batching
        return attention_batches_on(self.device) if batching is None else batching

    def _steps_objects_together(self) -> bool:
        """Whether a pruned propagation steps a video's objects together (one memory-attention
        call per frame for all of them): where streams batch, and never with sampled MC-dropout
        uncertainty, whose random stream would then be drawn in another order than one object
        after another."""
        router = self.router if self.pruning_active else None
        return self.batches_attention and router is not None and router.config.uncertainty != "mc"

    def _object_step(self, inference_state, frame_idx: int, reverse: bool, obj_idx: int, modes: _ThreadModes):
        """One object's tracking step on ``frame_idx`` as sam2's propagation runs it, maybe on a
        thread of the video's object rendezvous, under the propagating thread's ``modes``."""
        output_dict = inference_state["output_dict_per_obj"][obj_idx]
        with modes.entered():
            return self._run_object(inference_state, output_dict, obj_idx, frame_idx, 1, False, None, None,
                                    reverse, True, None)

    def _run_object(self, inference_state, output_dict, obj_idx, frame_idx, batch_size, is_init_cond_frame,
                    point_inputs, mask_inputs, reverse, run_mem_encoder, prev_sam_mask_logits):
        """sam2's step of one object on one frame, in this predictor's context; its memory compacted."""
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
            req = prepare_conditioning(
                self, frame_idx, feats, current_vision_pos_embeds[-1], (H, W), output_dict, num_frames,
                track_in_reverse, kept,
            )
        batcher = rendezvous.current()
        if batcher is not None and batcher.predictor is self:
            # Stepped with other streams (this video's objects, other videos' in lockstep): wait
            # for one attention call over all of them.
            req.stats = frame_stats(ctx.inference_state, ctx.frame_idx) if ctx and self.collect_stats else None
            pix = batcher.submit([req])[0]
        else:
            with self._timed("memory_attention"):
                pix = condition(self, req)
        if ctx is not None:
            ctx.kept = kept
        self._count_tokens(ctx, kept.numel() * B, H * W * B, n_prior * B)
        return pix


#: The ``predictor_target`` that builds this predictor with sam2's loader (the one name for it).
PREDICTOR_TARGET = f"{PrunedSAM2VideoPredictor.__module__}.{PrunedSAM2VideoPredictor.__qualname__}"
