"""The region image a captioner sees."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam2.prompts.region import CLIP_MEAN_RGB, crop_with_margin, draw_box, region_image


def test_crop_is_square_with_margin_and_padding():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[40:60, 50:150] = 255  # a wide object
    crop = crop_with_margin(frame, (50, 40, 150, 60), margin=0.1)
    assert crop.shape == (120, 120, 3)  # 100 + 2*10 wide, padded square
    assert (crop[0, 0] == CLIP_MEAN_RGB).all()  # padding colour
    assert crop[60, 60].tolist() == [255, 255, 255]  # the object sits in the middle


def test_crop_clips_to_the_frame():
    frame = np.full((50, 50, 3), 7, np.uint8)
    crop = crop_with_margin(frame, (0, 0, 50, 50), margin=0.5)
    assert crop.shape == (50, 50, 3) and (crop == 7).all()
    with pytest.raises(ValueError, match="does not overlap"):
        crop_with_margin(frame, (100, 100, 120, 120), margin=0.0)


def test_draw_box_outlines_in_red_and_keeps_the_frame():
    frame = np.zeros((60, 80, 3), np.uint8)
    out = draw_box(frame, (10, 10, 50, 40), width=2)
    assert out.shape == frame.shape and (frame == 0).all()
    assert out[10, 30].tolist() == [255, 0, 0] and out[39, 30].tolist() == [255, 0, 0]
    assert out[25, 30].tolist() == [0, 0, 0]


def test_region_image_modes():
    frame = np.zeros((30, 60, 3), np.uint8)
    assert region_image(frame, None).shape == (60, 60, 3)
    assert region_image(frame, (0, 0, 10, 10), "draw").shape == frame.shape
    with pytest.raises(ValueError, match="region mode"):
        region_image(frame, (0, 0, 10, 10), "blur")
