"""``fastsam2-batch eval`` through click: tables, --json, --out, side by side, S3, errors."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from davis_fixtures import read_stack, two_object_sequence, write_davis, write_run

from fastsam2.cli.eval import eval_command
from fastsam2.eval.evaluate import MEASURES

SEQS = ["car-shadow", "motocross-jump"]


def invoke(args):
    result = CliRunner().invoke(eval_command, args, catch_exceptions=False)
    return result


def test_eval_json_and_scores_parquet(shared_data, tmp_path):
    gt = shared_data / "davis2016-val"
    pred = shared_data / "osvos-davis2016-val-binarized"
    out_json, out_pq = tmp_path / "r.json", tmp_path / "eval" / "osvos.parquet"
    r = invoke(["--gt", str(gt), "--pred", str(pred), "--sequences", ",".join(SEQS),
                "--json", str(out_json), "--out", str(out_pq)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "car-shadow" in r.output and "Global" in r.output
    doc = json.loads(out_json.read_text())
    assert list(doc)[:8] == [*MEASURES, "sequences"]
    assert set(doc["sequences"]) == set(SEQS)
    for m in MEASURES:
        lo = -1 if m.endswith("Decay") else 0
        assert lo <= doc[m] <= 1
    assert doc["J&F-Mean"] == pytest.approx((doc["J-Mean"] + doc["F-Mean"]) / 2)
    # The global row is the mean over objects (one per sequence here).
    assert doc["J-Mean"] == pytest.approx(np.mean([doc["sequences"][s]["J-Mean"] for s in SEQS]))

    table = pq.read_table(out_pq)
    n_frames = {s: len(list((gt / "Annotations/480p" / s).glob("*.png"))) for s in SEQS}
    assert table.num_rows == sum(n - 2 for n in n_frames.values())
    rows = table.to_pylist()
    assert {r["sequence"] for r in rows} == set(SEQS)
    cs = [r for r in rows if r["sequence"] == "car-shadow"]
    assert min(r["frame_idx"] for r in cs) == 1 and max(r["frame_idx"] for r in cs) == n_frames["car-shadow"] - 2
    assert np.mean([r["J"] for r in cs]) == pytest.approx(doc["sequences"]["car-shadow"]["J-Mean"])
    assert rows[0]["pred"] == str(pred.resolve())


def test_side_by_side_gives_both_and_differences(tmp_path, shared_data):
    gt = shared_data / "davis2016-val"
    osvos = shared_data / "osvos-davis2016-val-binarized"
    # B: the OSVOS masks as a run, with one sequence degraded (masks shifted 10 px).
    masks = {s: {1: read_stack(osvos / s) == 1} for s in SEQS}
    masks["motocross-jump"][1] = np.roll(masks["motocross-jump"][1], 10, axis=2)
    run = write_run(tmp_path / "pruned", masks)
    out_json = tmp_path / "cmp.json"
    r = invoke(["--gt", str(gt), "--pred", str(osvos), "--pred", str(run),
                "--sequences", ",".join(SEQS), "--json", str(out_json)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "ΔJ&F" in r.output and "pruned" in r.output
    doc = json.loads(out_json.read_text())
    a, b = doc["predictions"]["osvos-davis2016-val-binarized"], doc["predictions"]["pruned"]
    diff = doc["differences"]["pruned"]
    for m in MEASURES:
        assert diff[m] == pytest.approx(b[m] - a[m])
    assert diff["sequences"]["car-shadow"]["J&F-Mean"] == pytest.approx(0.0)
    assert diff["sequences"]["motocross-jump"]["J-Mean"] < -0.05


def test_eval_reads_run_from_s3_and_writes_there(s3_env, tmp_path):
    import s3fs

    labels = two_object_sequence()
    gt = write_davis(tmp_path / "gt", {"seq": labels})
    pred = {1: labels == 1, 2: np.roll(labels == 2, 3, axis=1)}
    local = write_run(tmp_path / "run", {"seq": pred})
    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    fs.put(str(local / "masks" / "seq.parquet"), f"{s3_env}/runs/r1/masks/part=0/seq.parquet")  # hive folder
    uri = f"s3://{s3_env}/runs/r1"
    r_local = invoke(["--gt", str(gt), "--pred", str(local), "--json", str(tmp_path / "local.json")])
    r_s3 = invoke(["--gt", str(gt), "--pred", uri, "--json", str(tmp_path / "s3.json"), "--out", f"{uri}/eval"])
    assert r_local.exit_code == 0 and r_s3.exit_code == 0, r_s3.output
    a, b = json.loads((tmp_path / "local.json").read_text()), json.loads((tmp_path / "s3.json").read_text())
    assert a["sequences"] == b["sequences"]
    assert b["pred"] == uri
    with fs.open(f"{s3_env}/runs/r1/eval/scores.parquet", "rb") as fh:
        scores = pq.read_table(fh)
    assert scores.num_rows == 2 * 4 and set(scores["obj_id"].to_pylist()) == {1, 2}


@pytest.mark.parametrize(
    "make_args,message",
    [
        (lambda p: ["--gt", str(p / "nope"), "--pred", str(p / "pred")], "ground truth folder not found"),
        (lambda p: ["--gt", str(p / "gt"), "--pred", str(p / "nope")], "predictions not found"),
        (
            lambda p: ["--gt", str(p / "gt"), "--pred", str(p / "pred"), "--sequences", "bogus"],
            "not in the ground truth",
        ),
        (lambda p: ["--gt", str(p / "gt"), "--pred", str(p / "gt")], "no ground-truth sequence has predictions"),
        (lambda p: ["--gt", str(p / "gt"), "--pred", str(p / "pred"), "--bound-th", "0"], "--bound-th"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, make_args, message):
    labels = two_object_sequence()
    write_davis(tmp_path / "gt", {"seq": labels})
    write_davis(tmp_path / "pred", {"seq": labels}, layout="")
    r = CliRunner().invoke(eval_command, make_args(tmp_path))
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output and not isinstance(r.exception, (TypeError, AttributeError, KeyError))


def test_sequences_from_file_and_nan_free_json(tmp_path):
    labels = two_object_sequence()
    write_davis(tmp_path / "gt", {"a": labels, "b": labels, "short": labels[:2]})
    write_davis(tmp_path / "pred", {"a": labels, "b": labels, "short": labels[:2]}, layout="")
    (tmp_path / "val.txt").write_text("a\nshort\n")
    r = invoke(["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                "--sequences", str(tmp_path / "val.txt"), "--json", str(tmp_path / "o.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o.json").read_text())
    assert set(doc["sequences"]) == {"a", "short"}
    # A 2-frame sequence has no scored frame: its statistics are NaN, written as null.
    assert doc["sequences"]["short"]["J-Mean"] is None
    assert doc["J-Mean"] is None or math.isfinite(doc["J-Mean"])
