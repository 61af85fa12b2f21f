"""Build the tracker a job config asks for: SAM2 weights, image size, device, pruning.

Every run uses :class:`~fastsam2.tracking.pruned_predictor.PrunedSAM2VideoPredictor`:
at keep ratio 1.0 it is stock SAM2 bit for bit (plus per-component timers), below
1.0 its memory attention runs on the tokens the router keeps.
"""

from __future__ import annotations

import logging

from fastsam2.config import JobConfig
from fastsam2.models.factory import ModelBundle, load_sam2
from fastsam2.tracking.pruned_predictor import PREDICTOR_TARGET
from fastsam2.tracking.router import Router, build_router
from fastsam2.tracking.sparse_encoder import EncoderSparsityConfig
from fastsam2.tracking.streaming import StreamingTracker

log = logging.getLogger(__name__)


def build_router_for(cfg: JobConfig, device) -> Router | None:
    """The router of ``cfg.pruning`` (None when dense).

    CLIP is built on the first phrase; without pretrained CLIP weights (no
    network, no cache) the router then drops text relevance and keeps its other
    signals, with a warning (:class:`~fastsam2.tracking.signals.ClipDenseSimilarity`).
    """
    pr = cfg.pruning
    if pr.keep_ratio >= 1.0:
        return None
    return build_router(pr.semantic, pr.uncertainty, clip_model=pr.clip_model, clip_pretrained=pr.clip_pretrained,
                        clip_random_weights=cfg.model.random_weights, router_weights=pr.router_weights,
                        device=device, mc_passes=pr.mc_passes)


def encoder_sparsity_config(cfg: JobConfig) -> EncoderSparsityConfig:
    """The sparse-encoder settings of ``cfg.pruning`` (mode "off" = stock encoder)."""
    pr = cfg.pruning
    return EncoderSparsityConfig(mode=pr.encoder_sparsity, refresh=pr.encoder_refresh,
                                 threshold=pr.encoder_threshold)


def load_tracker_sam2(cfg: JobConfig) -> ModelBundle:
    """The SAM2 bundle ``cfg.model`` names, built as our pruned predictor class."""
    m = cfg.model
    return load_sam2(m.sam2_config, m.sam2_checkpoint, image_size=m.image_size, device=m.device,
                     random_weights=m.random_weights, predictor_target=PREDICTOR_TARGET,
                     storage_options=cfg.storage_options)


def build_tracker(cfg: JobConfig, sam2: ModelBundle | None = None) -> StreamingTracker:
    """The tracker of ``cfg``; pass ``sam2`` (from :func:`load_tracker_sam2`) to keep its bundle
    for other users of the same weights (the late-object masker)."""
    m = cfg.model
    sam2 = sam2 or load_tracker_sam2(cfg)
    predictor = sam2.model
    router = build_router_for(cfg, predictor.device)
    trained_on = router.meta.get("sam2_config") if router is not None else None
    if trained_on and trained_on != sam2.name:
        log.warning("router weights were trained on %s, this predictor is %s", trained_on, sam2.name)
    predictor.configure_pruning(keep_ratio=cfg.pruning.keep_ratio, router=router)
    predictor.configure_encoder_sparsity(encoder_sparsity_config(cfg))
    predictor.configure_runtime(m.precision, profile=m.profile, compile=m.compile)
    return StreamingTracker(predictor)
