"""J (region IoU), F (boundary F-measure) and their statistics, as DAVIS defines them.

This re-implements the semantics of the official davis2017-evaluation code
(``davis2017.metrics.db_eval_iou``, ``db_eval_boundary``/``f_measure``/``_seg2bmap``
and ``davis2017.utils.db_statistics``) without OpenCV or scikit-image, so numbers
reported by this tool can be compared with published DAVIS results.

Why not a straight port: the official code dilates every boundary map with a disk
(``cv2.dilate``) one full frame at a time, which is slow.  Dilating boundary B with
a disk of radius r and testing membership of pixel p is the same as asking whether
some pixel of B lies at Euclidean distance <= r from p (the skimage disk is
``x**2 + y**2 <= r**2``).  Boundaries are sparse, so we answer that with one
KD-tree per object and sequence over all frames at once (frames kept apart by an
offset on a third axis larger than r), and compute boundaries and areas only in a
small box around the masks of each frame.  The result is exact (squared distances
are integers); ``tests/test_eval_metrics.py`` checks it against the official values
and against a direct full-frame transcription with disk dilation.

Every function accepts a single frame ``(H, W)`` or a stack ``(T, H, W)``; stacks
return one value per frame.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

#: Boundary tolerance of the official evaluation: a fraction of the image diagonal.
BOUND_TH = 0.008
#: Number of temporal bins used for the decay statistic.
N_BINS = 4


def db_eval_iou(
    annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None
) -> np.ndarray | float:
    """Region similarity J: |gt & pred| / |gt | pred|, ignoring void pixels.

    DAVIS rule kept on purpose: when the union is empty (both masks empty, or all
    void) J is 1, i.e. predicting "nothing" for an absent object is perfect.
    """
    annotation = np.asarray(annotation)
    segmentation = np.asarray(segmentation)
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ in shape")
    gt = annotation.astype(bool)
    pr = segmentation.astype(bool)
    inter = gt & pr
    union = gt | pr
    if void_pixels is not None:
        void_pixels = np.asarray(void_pixels)
        if void_pixels.shape != annotation.shape:
            raise ValueError(f"void {void_pixels.shape} and annotation {annotation.shape} differ in shape")
        keep = ~void_pixels.astype(bool)
        inter &= keep
        union &= keep
    n_inter = np.count_nonzero(inter, axis=(-2, -1))
    n_union = np.count_nonzero(union, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        j = np.where(n_union == 0, 1.0, n_inter / np.maximum(n_union, 1))
    return float(j) if j.ndim == 0 else j.astype(np.float64)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a mask, exactly as the official ``_seg2bmap``.

    A pixel is boundary when it differs from its east, south or south-east
    neighbour.  The official code special-cases the last row (east only) and the
    last column (south only) and clears the bottom-right pixel, so the image frame
    itself is never a boundary: a full-frame mask has no boundary at all.
    """
    seg = np.asarray(seg)
    seg = seg if seg.dtype == bool else seg.astype(bool)
    b = np.zeros_like(seg)
    core = seg[..., :-1, :-1]
    b[..., :-1, :-1] = (core ^ seg[..., :-1, 1:]) | (core ^ seg[..., 1:, :-1]) | (core ^ seg[..., 1:, 1:])
    b[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
    b[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
    b[..., -1, -1] = False
    return b


def bound_radius(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Matching tolerance in pixels: ``bound_th`` pixels if >= 1, else ceil(bound_th * diagonal)."""
    h, w = shape[-2:]
    if bound_th >= 1:
        if float(bound_th) != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be whole, got {bound_th}")
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(h, w)))


def disk(radius: int) -> np.ndarray:
    """The structuring element of ``skimage.morphology.disk``: x**2 + y**2 <= r**2.

    Not used by the fast path; kept as the reference definition (and for tests).
    """
    r = np.arange(-radius, radius + 1)
    return (r[None, :] ** 2 + r[:, None] ** 2) <= radius**2


@dataclass(frozen=True)
class BoundaryCounts:
    """Per-frame boundary diagnostics (arrays of length T, or scalars for one frame)."""

    n_fg: np.ndarray  # boundary pixels of the prediction
    n_gt: np.ndarray  # boundary pixels of the ground truth
    fg_match: np.ndarray  # prediction boundary pixels within r of a gt boundary pixel
    gt_match: np.ndarray  # gt boundary pixels within r of a prediction boundary pixel
    precision: np.ndarray
    recall: np.ndarray
    f: np.ndarray
    radius: int


def _matched(query: tuple[np.ndarray, ...], ref: tuple[np.ndarray, ...], radius: int) -> np.ndarray:
    """For each query boundary pixel (t, y, x): is a ref pixel of the same frame within radius?"""
    n_query = query[0].size
    if n_query == 0 or ref[0].size == 0:
        return np.zeros(n_query, dtype=bool)
    # Frames are separated on the first axis by more than the radius, so one tree
    # answers all frames without cross-frame matches.
    sep = float(2 * radius + 2)
    ref_pts = np.column_stack([ref[0] * sep, ref[1], ref[2]]).astype(np.float64)
    q_pts = np.column_stack([query[0] * sep, query[1], query[2]]).astype(np.float64)
    tree = cKDTree(ref_pts, balanced_tree=False, compact_nodes=False)
    dist, _ = tree.query(q_pts, k=1, distance_upper_bound=radius + 0.5)
    # Squared distances are integers, so a tiny tolerance makes "<= r" exact.
    return dist <= radius + 1e-6


def _crop_boxes(union: np.ndarray) -> list[tuple[int, int, int, int] | None]:
    """Per frame, the box around the union of both masks grown by one pixel (None if empty).

    Why this is exact: a pixel's boundary value depends only on itself and its
    E/S/SE neighbours, so outside this box everything is background with
    background neighbours (no boundary).  Inside, the extra top/left pixel keeps the
    pixels whose SE neighbour is the mask, and the bottom/right margin is either
    empty (so the official last-row/column special case gives 0, as the full image
    would) or the image's own last row/column (where the special case belongs).
    """
    _, h, w = union.shape
    rows = union.any(axis=2)
    cols = union.any(axis=1)
    boxes: list[tuple[int, int, int, int] | None] = []
    for r, c in zip(rows, cols):
        ys = np.flatnonzero(r)
        if ys.size == 0:
            boxes.append(None)
            continue
        xs = np.flatnonzero(c)
        boxes.append((max(ys[0] - 1, 0), min(ys[-1] + 2, h), max(xs[0] - 1, 0), min(xs[-1] + 2, w)))
    return boxes


def _boundary_points(
    masks: np.ndarray, boxes: list[tuple[int, int, int, int] | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, y, x) of every boundary pixel, computing boundaries only inside each frame's box."""
    ts, ys, xs = [], [], []
    for t, box in enumerate(boxes):
        if box is None:
            continue
        y0, y1, x0, x1 = box
        yy, xx = np.nonzero(seg2bmap(masks[t, y0:y1, x0:x1]))
        ts.append(np.full(yy.size, t, dtype=np.int64))
        ys.append(yy + y0)
        xs.append(xx + x0)
    if not ts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(ts), np.concatenate(ys), np.concatenate(xs)


def _as_stack(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    a = a if a.dtype == bool else a.astype(bool)
    return a[None] if a.ndim == 2 else a


@dataclass(frozen=True)
class FrameScores:
    """J and boundary diagnostics per frame of one object (arrays of length T)."""

    j: np.ndarray
    intersection: np.ndarray
    union: np.ndarray
    boundary: BoundaryCounts


def frame_scores(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> FrameScores:
    """J and F of a (T, H, W) stack in one pass, with the official semantics.

    Void pixels are removed from both masks first: for J that is the official
    ``& ~void`` on intersection and union, for F the official
    ``mask * ~void`` before ``_seg2bmap``.
    """
    gt = _as_stack(annotation)
    pr = _as_stack(segmentation)
    if gt.shape != pr.shape:
        raise ValueError(f"annotation {gt.shape} and segmentation {pr.shape} differ in shape")
    if void_pixels is not None:
        keep = ~_as_stack(void_pixels)
        if keep.shape != gt.shape:
            raise ValueError(f"void {keep.shape} and annotation {gt.shape} differ in shape")
        gt = gt & keep
        pr = pr & keep
    radius = bound_radius(gt.shape, bound_th)
    n_frames = gt.shape[0]

    boxes = _crop_boxes(gt | pr)
    inter = np.zeros(n_frames, dtype=np.int64)
    union = np.zeros(n_frames, dtype=np.int64)
    for t, box in enumerate(boxes):
        if box is not None:
            y0, y1, x0, x1 = box
            g, p = gt[t, y0:y1, x0:x1], pr[t, y0:y1, x0:x1]
            inter[t] = np.count_nonzero(g & p)
            union[t] = np.count_nonzero(g | p)
    # DAVIS: an empty union (object absent and not predicted) scores J = 1.
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))

    fg_pts = _boundary_points(pr, boxes)
    gt_pts = _boundary_points(gt, boxes)
    fg_ok = _matched(fg_pts, gt_pts, radius)
    gt_ok = _matched(gt_pts, fg_pts, radius)

    n_fg = np.bincount(fg_pts[0], minlength=n_frames)
    n_gt = np.bincount(gt_pts[0], minlength=n_frames)
    fg_match = np.bincount(fg_pts[0][fg_ok], minlength=n_frames)
    gt_match = np.bincount(gt_pts[0][gt_ok], minlength=n_frames)

    # With no boundary on one side the match counts are 0, so these two lines give
    # the official special cases: (n_fg=0, n_gt>0) -> P=1, R=0; (n_fg>0, n_gt=0) ->
    # P=0, R=1; (0, 0) -> P=R=1.
    precision = np.where(n_fg > 0, fg_match / np.maximum(n_fg, 1), 1.0)
    recall = np.where(n_gt > 0, gt_match / np.maximum(n_gt, 1), 1.0)
    denom = precision + recall
    f = np.where(denom == 0, 0.0, 2 * precision * recall / np.where(denom == 0, 1.0, denom))
    counts = BoundaryCounts(n_fg, n_gt, fg_match, gt_match, precision, recall, f, radius)
    return FrameScores(j, inter, union, counts)


def boundary_counts(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> BoundaryCounts:
    """Boundary precision / recall / F per frame (scalars for a single frame).

    Rules (from the official ``f_measure``): no predicted boundary but a gt
    boundary -> P=1, R=0; a predicted boundary but none in gt -> P=0, R=1;
    neither -> P=R=1; F = 2PR/(P+R), or 0 when P+R = 0.
    """
    single = np.ndim(annotation) == 2
    c = frame_scores(annotation, segmentation, void_pixels, bound_th).boundary
    if single:
        return BoundaryCounts(
            int(c.n_fg[0]), int(c.n_gt[0]), int(c.fg_match[0]), int(c.gt_match[0]),
            float(c.precision[0]), float(c.recall[0]), float(c.f[0]), c.radius,
        )  # fmt: skip
    return c


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> np.ndarray | float:
    """Boundary accuracy F, i.e. the official ``db_eval_boundary(gt, pred)``."""
    return boundary_counts(annotation, segmentation, void_pixels, bound_th).f


def decay_bin_ids(n: int, legacy_uint8: bool = False) -> np.ndarray:
    """Edges of the 4 temporal bins used for decay, as ``db_statistics`` computes them.

    The official code casts the edges to ``uint8``, which wraps for series longer
    than 256 values and silently gives a wrong (or NaN) decay.  By default we keep
    the intended edges; they equal the official ones whenever n <= 256, i.e. for
    every DAVIS sequence.  ``legacy_uint8=True`` reproduces the wrap-around.
    """
    ids = np.round(np.linspace(1, n, N_BINS + 1) + 1e-10) - 1
    ids = ids.astype(np.int64)
    if legacy_uint8:
        ids = ids % 256
    return ids


def db_statistics(per_frame_values: np.ndarray, legacy_uint8: bool = False) -> tuple[float, float, float]:
    """Mean, Recall and Decay of one object's per-frame scores (official semantics).

    Mean ignores NaN; Recall is the fraction of frames scoring > 0.5 where a NaN
    frame counts as a miss (``nanmean`` of a boolean array); Decay is the mean of
    the first quarter minus the mean of the last quarter of the series.
    """
    v = np.asarray(per_frame_values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v))
        recall = float(np.mean(v > 0.5))
        ids = decay_bin_ids(v.size, legacy_uint8)
        first = v[ids[0] : ids[1] + 1]
        last = v[ids[3] : ids[4] + 1]
        decay = float(np.nanmean(first) - np.nanmean(last)) if first.size and last.size else math.nan
    return mean, recall, decay
