"""Build the tracker a job config asks for: SAM2 weights, image size, device, pruning."""

from __future__ import annotations

from fastsam2.config import JobConfig
from fastsam2.models.sam2 import build_video_predictor
from fastsam2.tracking.streaming import StreamingTracker


def build_tracker(cfg: JobConfig) -> StreamingTracker:
    m = cfg.model
    predictor = build_video_predictor(
        m.sam2_config,
        m.sam2_checkpoint,
        image_size=m.image_size,
        device=m.device,
        random_weights=m.random_weights,
        storage_options=cfg.storage_options,
    )
    return StreamingTracker(predictor)
