"""Transcriptions of the official davis2017 evaluator's F measure and boundary map: the
reference our fast metrics are checked against (cv2.dilate -> scipy binary_dilation)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fastsam2.eval import metrics


def official_f_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008):
    """A line-by-line transcription of davis2017 ``f_measure`` (cv2.dilate -> scipy binary_dilation)."""
    void = np.zeros_like(pred, dtype=bool) if void is None else void.astype(bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(pred.shape))
    fg_boundary = metrics.seg2bmap(pred * np.logical_not(void))
    gt_boundary = metrics.seg2bmap(gt * np.logical_not(void))
    se = metrics.disk(int(bound_pix))
    fg_dil = ndimage.binary_dilation(fg_boundary, structure=se)
    gt_dil = ndimage.binary_dilation(gt_boundary, structure=se)
    gt_match = gt_boundary * fg_dil
    fg_match = fg_boundary * gt_dil
    n_fg, n_gt = np.sum(fg_boundary), np.sum(gt_boundary)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision, recall = np.sum(fg_match) / float(n_fg), np.sum(gt_match) / float(n_gt)
    return 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def official_seg2bmap(seg: np.ndarray) -> np.ndarray:
    """The official ``_seg2bmap`` with its e/s/se arrays, for the boundary-map check."""
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b
