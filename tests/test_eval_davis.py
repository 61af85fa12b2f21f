"""DAVIS evaluation end to end on ../shared/data: OSVOS predictions against DAVIS-2016 val,
run-Parquet predictions, and the protocol details (void, objects, frames) on tiny datasets."""

from __future__ import annotations

import time

import numpy as np
import pytest
from davis_fixtures import ellipse, read_stack, two_object_sequence, write_davis, write_run
from davis_official import official_f_measure

from fastsam2.eval import metrics
from fastsam2.eval.evaluate import evaluate
from fastsam2.eval.io import EvalError

# --------------------------------------------------------------------------- shared data


@pytest.fixture(scope="module")
def osvos_result(shared_data):
    start = time.perf_counter()
    res = evaluate(str(shared_data / "davis2016-val"), [str(shared_data / "osvos-davis2016-val-binarized")])[0]
    return res, time.perf_counter() - start


def test_osvos_on_davis2016(osvos_result):
    res, elapsed = osvos_result
    assert len(res.sequences) == 20 and not res.missing_sequences
    assert sum(len(s.frames) for s in res.sequences.values()) == 1376 - 2 * 20
    g = res.global_metrics()
    print(f"\nOSVOS on DAVIS-2016 val: {g} in {elapsed:.1f} s")
    # OSVOS (binarised from its DAVIS-2017 results) scores in the 0.7s, as published.
    assert 0.70 < g["J&F-Mean"] < 0.85
    assert g["J&F-Mean"] == pytest.approx((g["J-Mean"] + g["F-Mean"]) / 2)
    # Regression pin of this implementation's values (validated per frame below).
    assert g["J-Mean"] == pytest.approx(0.7558411602197285, abs=1e-9)
    assert g["F-Mean"] == pytest.approx(0.776345540080724, abs=1e-9)
    assert elapsed < 60, f"eval of the 20 DAVIS-2016 sequences took {elapsed:.1f} s"


def test_osvos_per_frame_equals_direct_transcription(osvos_result, shared_data):
    """Real masks at 854x480: every scored frame equals the dilation-based official formula."""
    res, _ = osvos_result
    seq = "car-shadow"
    gt = read_stack(shared_data / "davis2016-val/Annotations/480p" / seq)
    pred = read_stack(shared_data / "osvos-davis2016-val-binarized" / seq)
    obj = res.sequences[seq].objects[0]
    for k, t in enumerate(obj.frame_idx):
        assert obj.j[k] == pytest.approx(metrics.db_eval_iou(gt[t] == 1, pred[t] == 1), abs=1e-12)
        assert obj.f[k] == pytest.approx(official_f_measure(pred[t] == 1, gt[t] == 1), abs=1e-12)
    assert res.sequence_metrics(seq)["J-Mean"] == pytest.approx(np.mean(obj.j))


def test_ground_truth_against_itself_is_perfect(shared_data):
    gt = shared_data / "davis2016-val"
    res = evaluate(str(gt), [str(gt / "Annotations" / "480p")], sequences=["blackswan", "dog"])[0]
    g = res.global_metrics()
    assert g["J&F-Mean"] == 1.0 and g["J-Recall"] == 1.0 and g["F-Decay"] == 0.0


def test_run_parquet_equals_png_folder(shared_data, tmp_path):
    """The same masks as a run's COCO-RLE Parquet and as PNGs give identical scores."""
    seqs = ["car-shadow", "libby"]
    osvos = shared_data / "osvos-davis2016-val-binarized"
    run = write_run(tmp_path / "run", {s: {1: read_stack(osvos / s) == 1} for s in seqs})
    gt = str(shared_data / "davis2016-val")
    png, parquet = evaluate(gt, [str(osvos), str(run)], sequences=seqs)
    for s in seqs:
        a, b = png.sequences[s].objects[0], parquet.sequences[s].objects[0]
        np.testing.assert_array_equal(a.j, b.j)
        np.testing.assert_array_equal(a.f, b.f)
    assert parquet.missing_masks == 0


# --------------------------------------------------------------------------- protocol details


def test_objects_from_first_frame_and_frames_dropped(tmp_path):
    labels = two_object_sequence()
    labels[3][ellipse(48, 64, 5, 5, 3, 3)] = 3  # appears later: not an object in DAVIS
    gt = write_davis(tmp_path / "gt", {"seq": labels})
    pred = labels.copy()
    pred[pred == 3] = 0
    pred[4][pred[4] == 2] = 0  # object 2 lost on frame 4
    write_davis(tmp_path / "pred", {"seq": pred}, layout="")
    res = evaluate(str(gt), [str(tmp_path / "pred")])[0]
    seq = res.sequences["seq"]
    assert [o.obj_id for o in seq.objects] == [1, 2]
    assert seq.frames == ["00001", "00002", "00003", "00004"]  # first and last dropped
    np.testing.assert_array_equal(seq.objects[0].j, [1, 1, 1, 1])
    np.testing.assert_array_equal(seq.objects[1].j, [1, 1, 1, 0])
    # Global = mean over objects of per-object means.
    assert res.global_metrics()["J-Mean"] == pytest.approx((1 + 0.75) / 2)


def test_void_is_background_by_default_and_ignorable(tmp_path):
    labels = two_object_sequence()[:, :, :]
    gt_labels = labels.copy()
    gt_labels[:, :, 50:] = np.where(gt_labels[:, :, 50:] == 0, 255, gt_labels[:, :, 50:])  # void band
    gt = write_davis(tmp_path / "gt", {"seq": gt_labels})
    pred = labels.copy()
    pred[:, 40:, 52:] = 1  # false positive on object 1, entirely inside the void band
    write_davis(tmp_path / "pred", {"seq": pred}, layout="")
    official = evaluate(str(gt), [str(tmp_path / "pred")])[0]
    ignored = evaluate(str(gt), [str(tmp_path / "pred")], void="ignore")[0]
    j_off = official.sequences["seq"].objects[0].j
    j_ign = ignored.sequences["seq"].objects[0].j
    assert np.all(j_off < 1), "official semi-supervised: void counts as background"
    np.testing.assert_array_equal(j_ign, 1.0)
    assert official.protocol["void"] == "background"


def test_binary_0_255_ground_truth_and_predictions(tmp_path):
    fg = np.stack([ellipse(40, 50, 20, 10 + 2 * k, 8, 9) for k in range(5)])
    gt = write_davis(tmp_path / "gt", {"s": fg.astype(np.uint8) * 255}, palette=False)
    write_davis(tmp_path / "pred", {"s": np.roll(fg, 1, axis=2).astype(np.uint8) * 255}, palette=False, layout="")
    res = evaluate(str(gt), [str(tmp_path / "pred")])[0]
    seq = res.sequences["s"]
    assert len(seq.objects) == 1
    assert 0.8 < seq.objects[0].j.mean() < 1 and seq.objects[0].f.mean() == 1.0


def test_prediction_with_extra_object_is_an_error(tmp_path):
    labels = two_object_sequence()
    gt = write_davis(tmp_path / "gt", {"seq": labels})
    pred = labels.copy()
    pred[2][0:3, 0:3] = 3
    write_davis(tmp_path / "pred", {"seq": pred}, layout="")
    with pytest.raises(EvalError, match="object id 3"):
        evaluate(str(gt), [str(tmp_path / "pred")])


def test_missing_objects_and_frames_in_a_run_count_as_empty(tmp_path):
    labels = two_object_sequence()
    gt = write_davis(tmp_path / "gt", {"seq": labels, "other": labels})
    # Only object 1, and frame 2 of it missing; sequence "other" absent altogether.
    run = write_run(tmp_path / "run", {"seq": {1: labels == 1}}, skip={("seq", 1, 2)})
    res = evaluate(str(gt), [str(run)])[0]
    assert res.missing_sequences == ["other"]
    seq = res.sequences["seq"]
    np.testing.assert_array_equal(seq.objects[0].j, [1, 0, 1, 1])
    np.testing.assert_array_equal(seq.objects[1].j, [0, 0, 0, 0])
    assert res.missing_masks == 1 + 4  # one frame of object 1, all scored frames of object 2
    with pytest.raises(EvalError, match="other"):
        evaluate(str(gt), [str(run)], strict=True)


def test_size_mismatch_is_reported(tmp_path):
    labels = two_object_sequence()
    gt = write_davis(tmp_path / "gt", {"seq": labels})
    run = write_run(tmp_path / "run", {"seq": {1: np.zeros((6, 24, 32), bool)}})
    with pytest.raises(EvalError, match="32x24"):
        evaluate(str(gt), [str(run)])
