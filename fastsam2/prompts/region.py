"""The image a captioner sees for a box: a square crop with margin, or the frame with the box drawn.

A crop keeps the object large in LLaVA's 336 px input; the margin keeps some
context (a "surfer" is easier to name with the wave in view). The crop is padded
to a square with CLIP's mean colour because LLaVA's processor resizes the short
side and centre-crops: a tall or wide crop would otherwise lose the object's
ends. LLaVA-1.5 itself was trained on images padded this way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: CLIP's mean colour (0-255), the padding LLaVA-1.5 trained with.
CLIP_MEAN_RGB = (122, 116, 104)

REGION_MODES = ("crop", "draw")


def crop_with_margin(frame: np.ndarray, box: Sequence[float], margin: float = 0.15) -> np.ndarray:
    """The box grown by ``margin`` of its size on each side, clipped to the frame, padded square."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = margin * max(x1 - x0, 1.0), margin * max(y1 - y0, 1.0)
    c0, r0 = int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my)))
    c1, r1 = int(min(w, np.ceil(x1 + mx))), int(min(h, np.ceil(y1 + my)))
    if c1 <= c0 or r1 <= r0:
        raise ValueError(f"box {tuple(box)} does not overlap the {w}x{h} frame")
    return pad_to_square(frame[r0:r1, c0:c1])


def pad_to_square(image: np.ndarray, fill: Sequence[int] = CLIP_MEAN_RGB) -> np.ndarray:
    """Centre ``image`` on a square canvas of ``fill`` colour."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = np.asarray(fill, dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = image[..., :3]
    return out


def draw_box(frame: np.ndarray, box: Sequence[float], colour=(255, 0, 0), width: int | None = None) -> np.ndarray:
    """A copy of ``frame`` with ``box`` outlined (red by default, as the prompt says)."""
    h, w = frame.shape[:2]
    width = width or max(2, round(min(h, w) / 150))
    out = np.array(frame[..., :3], dtype=np.uint8, copy=True)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = np.clip([x0, x1 - 1], 0, w - 1)
    y0, y1 = np.clip([y0, y1 - 1], 0, h - 1)
    c = np.asarray(colour, dtype=np.uint8)
    out[y0 : y0 + width, x0 : x1 + 1] = c
    out[max(y0, y1 - width + 1) : y1 + 1, x0 : x1 + 1] = c
    out[y0 : y1 + 1, x0 : x0 + width] = c
    out[y0 : y1 + 1, max(x0, x1 - width + 1) : x1 + 1] = c
    return out


def region_image(
    frame: np.ndarray, box: Sequence[float] | None, mode: str = "crop", margin: float = 0.15
) -> np.ndarray:
    """What the captioner sees for ``box``: see the module docstring. No box: the whole frame."""
    if mode not in REGION_MODES:
        raise ValueError(f"region mode must be one of {REGION_MODES}, got {mode!r}")
    if box is None:
        return pad_to_square(np.asarray(frame))
    if mode == "crop":
        return crop_with_margin(frame, box, margin)
    return draw_box(frame, box)
