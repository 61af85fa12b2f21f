"""J, F and statistics against the official DAVIS values (../shared/data/jf-reference),
and the fast path against a direct transcription of the official algorithm."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from davis_official import official_f_measure, official_seg2bmap

from fastsam2.eval import metrics
from helpers import shared_data_dir

TOL = 1e-6


@pytest.fixture(scope="module")
def reference(shared_data):
    root = shared_data / "jf-reference"
    if not (root / "reference_values.json").exists():
        pytest.skip(f"J&F reference cases not found in {root}")
    values = json.loads((root / "reference_values.json").read_text())
    cases = np.load(root / "reference_cases.npz")
    return values, cases


def test_reference_has_all_cases(reference):
    values, _ = reference
    assert len(values["cases"]) == 37


def _case_names() -> list[str]:
    """Case names for parametrisation (collected before fixtures exist; the shared_data fixture's folder)."""
    root = shared_data_dir()
    try:
        return [c["name"] for c in json.loads((root / "jf-reference" / "reference_values.json").read_text())["cases"]]
    except OSError:
        return []


def _load_case(reference, name):
    values, cases = reference
    case = next(c for c in values["cases"] if c["name"] == name)
    void = cases[f"{name}__void"] if f"{name}__void" in cases.files else None
    return case, cases[f"{name}__gt"], cases[f"{name}__pred"], void


CASE_NAMES = _case_names()


@pytest.mark.parametrize("name", CASE_NAMES or ["<reference data absent>"])
def test_reference_case(reference, name):
    """Every J and F (and boundary diagnostic) equals the official evaluation's to 1e-6."""
    case, gt, pred, void = _load_case(reference, name)
    th = case.get("bound_th", 0.008)
    if "objects" in case:  # label maps: object k is (gt == k, pred == k)
        for obj in case["objects"]:
            k = obj["obj"]
            assert metrics.db_eval_iou(gt == k, pred == k, void) == pytest.approx(obj["J"], abs=TOL)
            assert metrics.db_eval_boundary(gt == k, pred == k, void, th) == pytest.approx(obj["F"], abs=TOL)
        return
    if "J_per_frame" in case:  # (T, H, W) stacks
        np.testing.assert_allclose(metrics.db_eval_iou(gt, pred, void), case["J_per_frame"], atol=TOL, rtol=0)
        np.testing.assert_allclose(metrics.db_eval_boundary(gt, pred, void, th), case["F_per_frame"], atol=TOL, rtol=0)
        fs = metrics.frame_scores(gt, pred, void, th)
        np.testing.assert_allclose(fs.j, case["J_per_frame"], atol=TOL, rtol=0)
        np.testing.assert_allclose(fs.boundary.f, case["F_per_frame"], atol=TOL, rtol=0)
        return
    j = metrics.db_eval_iou(gt, pred, void)
    counts = metrics.boundary_counts(gt, pred, void, th)
    assert j == pytest.approx(case["J"], abs=TOL)
    assert counts.f == pytest.approx(case["F"], abs=TOL)
    assert metrics.frame_scores(gt, pred, void, th).j[0] == pytest.approx(case["J"], abs=TOL)
    diag = case.get("diag")
    if diag:
        assert counts.radius == diag["bound_pix"]
        assert 2 * counts.radius + 1 == diag["disk_size"]
        assert (counts.n_fg, counts.n_gt) == (diag["n_fg_boundary"], diag["n_gt_boundary"])
        assert (counts.fg_match, counts.gt_match) == (diag["fg_match"], diag["gt_match"])
        assert counts.precision == pytest.approx(diag["precision"], abs=TOL)
        assert counts.recall == pytest.approx(diag["recall"], abs=TOL)


def test_reference_statistics(reference):
    """Mean / Recall / Decay equal db_statistics, including NaN frames and short series."""
    values, _ = reference
    for s in values["statistics"]:
        series = np.array(s["values"], dtype=float)
        m, r, d = metrics.db_statistics(series)
        assert m == pytest.approx(s["M"], abs=TOL), s["name"]
        assert r == pytest.approx(s["R"], abs=TOL), s["name"]
        assert metrics.decay_bin_ids(len(series)).tolist() == [int(v) for v in s["bin_ids_float"]], s["name"]
        assert metrics.decay_bin_ids(len(series), legacy_uint8=True).tolist() == s["bin_ids_uint8"], s["name"]
        _, _, d_legacy = metrics.db_statistics(series, legacy_uint8=True)
        if s["D"] is None:
            # The official uint8 bin edges wrap past 256 values and give NaN; we reproduce
            # that on request, and by default compute the decay over the intended bins.
            assert math.isnan(d_legacy)
            ids = metrics.decay_bin_ids(len(series))
            expected = series[ids[0] : ids[1] + 1].mean() - series[ids[3] : ids[4] + 1].mean()
            assert d == pytest.approx(expected, abs=1e-12)
        else:
            assert d == pytest.approx(s["D"], abs=TOL), s["name"]
            assert d_legacy == pytest.approx(s["D"], abs=TOL), s["name"]


def test_seg2bmap_matches_official_on_random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 7), (6, 1), (5, 7), (37, 53)]:
        for p in (0.1, 0.5, 0.9):
            seg = rng.random(shape) < p
            np.testing.assert_array_equal(metrics.seg2bmap(seg), official_seg2bmap(seg))
    full = np.ones((10, 12), bool)
    assert not metrics.seg2bmap(full).any(), "the image frame is never a boundary"


def _blobs(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """Random smooth shapes of all sizes, some touching the image border, some empty frames."""
    out = np.zeros((t, h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for k in range(t):
        if k % 7 == 3:
            continue  # empty frame
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
            ry, rx = rng.uniform(1, h / 2), rng.uniform(1, w / 2)
            out[k] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if k % 5 == 0:
            out[k] ^= rng.random((h, w)) < 0.02  # speckle: many tiny components
    return out


@pytest.mark.parametrize(
    "shape,bound_th", [((12, 48, 64), 0.008), ((10, 120, 213), 0.008), ((8, 60, 80), 3), ((6, 30, 40), 0.05)]
)
def test_fast_path_equals_direct_transcription(shape, bound_th):
    """Cropped boundaries + KD-tree matching give exactly the dilation-based official F."""
    rng = np.random.default_rng(abs(hash(shape)) % 2**32)
    gt = _blobs(rng, *shape)
    pred = _blobs(rng, *shape)
    pred[::4] = gt[::4]  # some frames identical
    pred[1::6] = np.roll(gt[1::6], 2, axis=2)  # some shifted by less than the radius
    void = rng.random(shape) < 0.05
    for v in (None, void):
        fs = metrics.frame_scores(gt, pred, v, bound_th)
        for t in range(shape[0]):
            vt = None if v is None else v[t]
            assert fs.boundary.f[t] == pytest.approx(official_f_measure(pred[t], gt[t], vt, bound_th), abs=1e-12)
            assert fs.j[t] == pytest.approx(metrics.db_eval_iou(gt[t], pred[t], vt), abs=1e-12)


def test_empty_union_is_one_and_shapes_checked():
    z = np.zeros((3, 4, 5), bool)
    np.testing.assert_array_equal(metrics.db_eval_iou(z, z), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(metrics.db_eval_boundary(z, z), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        metrics.db_eval_iou(z, np.zeros((3, 4, 6), bool))
    with pytest.raises(ValueError):
        metrics.bound_radius((10, 10), 2.5)


def test_statistics_edge_cases():
    assert all(math.isnan(v) for v in metrics.db_statistics(np.array([])))
    m, r, d = metrics.db_statistics(np.array([np.nan, 1.0, 0.0]))
    assert m == 0.5 and r == pytest.approx(1 / 3)  # a NaN frame counts as a miss in Recall
