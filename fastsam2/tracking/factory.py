"""Build the tracker a job config asks for: SAM2 weights, image size, device, pruning.

Every run uses :class:`~fastsam2.tracking.pruned_predictor.PrunedSAM2VideoPredictor`:
at keep ratio 1.0 it is stock SAM2 bit for bit (plus per-component timers), below
1.0 its memory attention runs on the tokens the router keeps.
"""

from __future__ import annotations

import logging

from fastsam2.config import JobConfig
from fastsam2.models.clip import ClipWeightsUnavailable
from fastsam2.models.sam2 import build_video_predictor
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET
from fastsam2.tracking.router import Router, build_router
from fastsam2.tracking.sparse_encoder import EncoderSparsityConfig
from fastsam2.tracking.streaming import StreamingTracker

log = logging.getLogger(__name__)

def build_router_for(cfg: JobConfig, device) -> Router | None:
    """The router of ``cfg.pruning`` (None when dense).

    Without pretrained CLIP weights (no network, no cache) the router drops text
    relevance and keeps its other signals, with a warning: a run should not die
    for want of one of four signals.
    """
    pr = cfg.pruning
    if pr.keep_ratio >= 1.0:
        return None
    kwargs = dict(clip_model=pr.clip_model, clip_pretrained=pr.clip_pretrained,
                  clip_random_weights=cfg.model.random_weights, router_weights=pr.router_weights,
                  device=device, mc_passes=pr.mc_passes)
    try:
        return build_router(pr.semantic, pr.uncertainty, **kwargs)
    except ClipWeightsUnavailable as exc:
        log.warning("%s -- routing without text relevance", exc)
        return build_router("none", pr.uncertainty, **kwargs)


def encoder_sparsity_config(cfg: JobConfig) -> EncoderSparsityConfig:
    """The sparse-encoder settings of ``cfg.pruning`` (mode "off" = stock encoder)."""
    pr = cfg.pruning
    return EncoderSparsityConfig(mode=pr.encoder_sparsity, refresh=pr.encoder_refresh,
                                 threshold=pr.encoder_threshold)


def build_tracker(cfg: JobConfig) -> StreamingTracker:
    m = cfg.model
    predictor = build_video_predictor(
        m.sam2_config,
        m.sam2_checkpoint,
        image_size=m.image_size,
        device=m.device,
        random_weights=m.random_weights,
        predictor_target=PREDICTOR_TARGET,
        storage_options=cfg.storage_options,
    )
    predictor.configure_pruning(keep_ratio=cfg.pruning.keep_ratio, router=build_router_for(cfg, predictor.device))
    predictor.configure_encoder_sparsity(encoder_sparsity_config(cfg))
    predictor.configure_runtime(m.precision, profile=m.profile, compile=m.compile)
    return StreamingTracker(predictor)
