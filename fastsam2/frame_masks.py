"""The masks of every object on one frame: the fields the tracker and the Python API share.

numpy only, so :mod:`fastsam2.api` can name it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FrameMasks:
    """Masks of every object on one frame."""

    frame_idx: int
    obj_ids: list[int]
    masks: np.ndarray  # bool [num_objects, H, W]
    scores: np.ndarray  # float32 [num_objects]: mean foreground probability inside each mask

    def rle(self) -> list[dict]:
        """COCO RLE (``{"size": [H, W], "counts": str}``) per object, as the run's ``masks/`` rows hold them."""
        from fastsam2 import rle

        h, w = self.masks.shape[1:]
        return [{"size": [h, w], "counts": rle.encode(m)[0]} for m in self.masks]
