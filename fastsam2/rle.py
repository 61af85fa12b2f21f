"""COCO RLE for masks: pycocotools' compressed counts, as strings for Parquet."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def encode(mask: np.ndarray) -> tuple[str, int, list[float]]:
    """Bool/uint8 H x W mask -> (RLE counts string, area, [x0, y0, x1, y1]).

    The box is exclusive on x1/y1 and all zeros for an empty mask.
    """
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area = int(mask_utils.area(rle))
    if area:
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        bbox = [x, y, x + w, y + h]
    else:
        bbox = [0.0, 0.0, 0.0, 0.0]
    return rle["counts"].decode("ascii"), area, bbox


def decode(counts: str, height: int, width: int) -> np.ndarray:
    """RLE counts string -> bool H x W mask."""
    return mask_utils.decode({"size": [height, width], "counts": counts.encode("ascii")}).astype(bool)
