"""Per-token signals the router fuses: text relevance, uncertainty, prior and context.

Each signal is a map over the SAM2 token grid (image_size / 16 per side):

- :mod:`.semantic`: dense CLIP patch-text similarity (default) and the paper's
  least-squares projection (``paper`` mode, kept for comparison only).
- :mod:`.uncertainty`: MLP-dropout variance in image-encoder blocks 3-5, closed
  form (default) or sampled Monte-Carlo passes.
- :mod:`.prior`: the previous frame's mask on the token grid, dilated; the
  visual-context score; rank normalisation.
"""

from fastsam2.tracking.signals.prior import context_signal, prior_from_masks, rank_normalize
from fastsam2.tracking.signals.semantic import ClipDenseSimilarity, paper_lsq_relevance
from fastsam2.tracking.signals.uncertainty import (
    EncoderTaps,
    capture_encoder_taps,
    closed_form_uncertainty,
    mc_dropout_uncertainty,
)

__all__ = [
    "ClipDenseSimilarity",
    "EncoderTaps",
    "capture_encoder_taps",
    "closed_form_uncertainty",
    "context_signal",
    "mc_dropout_uncertainty",
    "paper_lsq_relevance",
    "prior_from_masks",
    "rank_normalize",
]
