"""A representative click for the auto prompt: the mask's most interior point.

A box alone is ambiguous for SAM2 (which of the overlapping things in it?), so
the video predictor also gets one positive click. The centroid is a poor click:
for a ring, a C shape or a person with spread arms it falls outside the object.
The maximum of the distance transform inside the mask always lies on the
object, as far as possible from its border, where SAM2 is least ambiguous.
The mask comes from SAM2 image prediction with the box prompt
(:class:`CoarseMasker`); if it is empty, the box centre is the fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from fastsam2.models.factory import ModelBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Click:
    """A positive click ``(x, y)`` in pixels; ``from_mask`` is False for the box-centre fallback."""

    x: float
    y: float
    from_mask: bool

    @property
    def point(self) -> tuple[float, float]:
        return (self.x, self.y)


def box_centre(box: Sequence[float]) -> tuple[float, float]:
    x0, y0, x1, y1 = box
    return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


def clip_mask_to_box(mask: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """``mask`` with everything outside ``box`` cleared, so the click stays in the box."""
    h, w = mask.shape
    x0, y0, x1, y1 = box
    c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    c1, r1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    out = np.zeros_like(mask, dtype=bool)
    out[r0:r1, c0:c1] = mask[r0:r1, c0:c1]
    return out


def representative_click(mask: np.ndarray, box: Sequence[float] | None = None) -> Click:
    """The point of ``mask`` (HxW bool) farthest from its border, as ``(x, y)`` pixels.

    The frame edge counts as border (the mask is zero-padded), so a mask cut by
    the frame is clicked away from the cut. With ``box`` the mask is clipped to
    it first. Ties go to the maximum nearest the mask's centroid, so the answer
    is deterministic and central. An empty mask gives the box centre
    (``from_mask=False``); with neither mask nor box it raises ``ValueError``.
    """
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    if box is not None:
        mask = clip_mask_to_box(mask, box)
    if not mask.any():
        if box is None:
            raise ValueError("empty mask and no box: no click can be placed")
        x, y = box_centre(box)
        return Click(x, y, from_mask=False)
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    rows, cols = np.nonzero(dist >= dist.max() - 1e-6)
    cy, cx = np.nonzero(mask)
    centroid = np.array([cy.mean(), cx.mean()])
    i = int(np.argmin((rows - centroid[0]) ** 2 + (cols - centroid[1]) ** 2))
    # Pixel (r, c) covers [c, c+1) x [r, r+1): click its centre.
    return Click(float(cols[i]) + 0.5, float(rows[i]) + 0.5, from_mask=True)


class CoarseMasker:
    """SAM2 image prediction with a box prompt, for the click only (coarse is enough).

    Pass a SAM2 bundle the run already loaded (e.g. the tracker's, from
    :func:`fastsam2.models.factory.load_sam2`) to share its weights, or let it
    load one.
    """

    def __init__(
        self,
        sam2: ModelBundle | None = None,
        *,
        config_name: str = "sam2.1_hiera_t",
        checkpoint: str | None = None,
        image_size: int = 1024,
        device: str = "auto",
        random_weights: bool = False,
    ) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        if sam2 is None:
            from fastsam2.models.factory import load_sam2

            sam2 = load_sam2(config_name, checkpoint, image_size=image_size, device=device, random_weights=random_weights)
        self.sam_model = sam_model = sam2.model
        self.random_weights = sam2.random_weights
        self.name = sam2.label
        self.predictor = SAM2ImagePredictor(sam_model)
        # The image predictor hard-codes the backbone grids of a 1024 px model
        # (256, 128, 64); derive them from the model's size (strides 4, 8, 16).
        size = int(sam_model.image_size)
        self.predictor._bb_feat_sizes = [(size // s, size // s) for s in (4, 8, 16)]

    def mask(self, frame: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """HxW bool mask of the object in ``box`` on an RGB uint8 frame."""
        import torch

        with torch.inference_mode():
            self.predictor.set_image(np.ascontiguousarray(frame))
            masks, _, _ = self.predictor.predict(
                box=np.asarray(box, dtype=np.float32), multimask_output=False
            )
            self.predictor.reset_predictor()
        return np.asarray(masks[0]) > 0

    def masks(self, frame: np.ndarray, boxes: Sequence[Sequence[float]]) -> list[np.ndarray]:
        """One HxW bool mask per box; the frame is encoded once for all of them."""
        import torch

        out: list[np.ndarray] = []
        if not len(boxes):
            return out
        with torch.inference_mode():
            self.predictor.set_image(np.ascontiguousarray(frame))
            for box in boxes:
                masks, _, _ = self.predictor.predict(box=np.asarray(box, dtype=np.float32), multimask_output=False)
                out.append(np.asarray(masks[0]) > 0)
            self.predictor.reset_predictor()
        return out

    def click(self, frame: np.ndarray, box: Sequence[float]) -> Click:
        """The representative click of the coarse mask, clipped to ``box``."""
        return representative_click(self.mask(frame, box), box)
