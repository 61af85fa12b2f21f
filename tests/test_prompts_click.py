"""The distance-transform click lies on the object, where a centroid does not."""

from __future__ import annotations

import numpy as np
import pytest

from fastsam2.prompts.click import representative_click


def ring(h=120, w=120, r_out=50, r_in=35):
    yy, xx = np.mgrid[:h, :w]
    d = np.hypot(yy - h / 2, xx - w / 2)
    return (d <= r_out) & (d >= r_in)


def c_shape(h=120, w=120):
    m = np.zeros((h, w), bool)
    m[10:110, 10:40] = True  # spine
    m[10:35, 10:110] = True  # top arm
    m[85:110, 10:110] = True  # bottom arm
    return m


def _inside(mask, click):
    return bool(mask[int(click.y), int(click.x)])


@pytest.mark.parametrize("make", [ring, c_shape], ids=["ring", "C"])
def test_click_is_on_the_shape_where_the_centroid_is_not(make):
    mask = make()
    ys, xs = np.nonzero(mask)
    assert not mask[int(ys.mean()), int(xs.mean())], "the centroid misses this shape"
    click = representative_click(mask)
    assert click.from_mask and _inside(mask, click)


def test_ring_click_is_mid_band():
    mask = ring(r_out=50, r_in=30)
    click = representative_click(mask)
    r = np.hypot(click.y - 60, click.x - 60)
    assert 35 <= r <= 45  # the band's middle, far from both borders


def test_click_stays_in_the_box_and_off_the_frame_edge():
    mask = np.zeros((100, 100), bool)
    mask[:, :60] = True  # cut by the frame's left edge
    click = representative_click(mask)
    assert 20 <= click.x <= 40, "the frame edge counts as border"
    box = (40, 10, 90, 90)
    click = representative_click(mask, box)
    assert 40 <= click.x <= 60 and 10 <= click.y <= 90


def test_empty_mask_falls_back_to_the_box_centre():
    click = representative_click(np.zeros((50, 80), bool), (10, 20, 30, 40))
    assert (click.x, click.y, click.from_mask) == (20.0, 30.0, False)
    # A mask wholly outside the box counts as empty.
    mask = np.zeros((50, 80), bool)
    mask[:5, :5] = True
    assert representative_click(mask, (10, 20, 30, 40)).from_mask is False
    with pytest.raises(ValueError, match="no click"):
        representative_click(np.zeros((5, 5), bool))


def test_click_is_deterministic_and_central_on_ties():
    mask = np.zeros((40, 100), bool)
    mask[10:30, 10:90] = True  # a bar: many maxima along its middle line
    click = representative_click(mask)
    assert click == representative_click(mask.copy())
    assert abs(click.x - 50) <= 1 and abs(click.y - 20) <= 1
