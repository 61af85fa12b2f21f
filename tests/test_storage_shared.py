"""One storage layer for the pipeline, eval and report: the same URI rules everywhere.

Eval reads ground truth and a run from a loopback S3 (moto) reached only through
``storage_options`` (the AWS variables point at a closed port), under ``s3a://``
as Spark writes it, skipping the ``_``/``.`` files of half-committed writers.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from davis_fixtures import two_object_sequence, write_davis, write_run

from fastsam2.eval.evaluate import evaluate, write_scores
from fastsam2.storage import canonical_uri, fs_and_path, join, list_parquet, read_table


def test_listing_skips_hidden_and_underscore_entries(tmp_path):
    (tmp_path / "videos" / "_temporary" / "0").mkdir(parents=True)
    (tmp_path / "videos" / "_temporary" / "0" / "part.parquet").write_bytes(b"half written")
    (tmp_path / "videos" / "_metadata.parquet").write_bytes(b"not a table")
    (tmp_path / "videos" / ".v1.parquet.1234.tmp.parquet").write_bytes(b"temp")
    (tmp_path / "videos" / "date=2026").mkdir()
    kept = tmp_path / "videos" / "date=2026" / "v1.parquet"
    from fastsam2.schema import table_from_rows

    pq.write_table(table_from_rows("videos", [{"video_id": "v1", "uri": "x"}]), kept)
    assert list_parquet(str(tmp_path), "videos") == [str(kept)]
    assert read_table(str(tmp_path), "videos").column("video_id").to_pylist() == ["v1"]  # the debris is never opened


def test_uri_rules():
    assert canonical_uri("s3a://bucket/runs/r1/") == "s3://bucket/runs/r1"
    assert canonical_uri("file:///tmp/x/../y") == "/tmp/y"
    assert join("s3://b/root/", "/masks/", "v.parquet") == "s3://b/root/masks/v.parquet"
    fs, path = fs_and_path("s3a://bucket/a/", {"anon": True})
    assert path == "bucket/a" and type(fs).__name__ == "S3FileSystem" and fs.anon


@pytest.fixture
def s3_only_through_options(s3_env, s3_endpoint, monkeypatch):
    """A bucket on the loopback S3, whose address reaches the code only as storage_options."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    opts = {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
    return s3_env, opts


def test_eval_reads_s3a_through_storage_options(s3_only_through_options, tmp_path):
    import s3fs

    bucket, opts = s3_only_through_options
    labels = two_object_sequence()
    gt = write_davis(tmp_path / "gt", {"seq": labels})
    local = write_run(tmp_path / "run", {"seq": {1: labels == 1, 2: np.roll(labels == 2, 3, axis=1)}})
    fs = s3fs.S3FileSystem(**opts)
    fs.put(str(gt), f"{bucket}/gt", recursive=True)
    fs.put(str(local / "masks" / "seq.parquet"), f"{bucket}/run/masks/seq.parquet")
    fs.pipe_file(f"{bucket}/run/masks/_temporary/0/seq.parquet", b"a writer's half-committed file")

    expected = evaluate(str(gt), [str(local)])[0]
    got = evaluate(f"s3a://{bucket}/gt", [f"s3a://{bucket}/run"], storage_options=opts)[0]
    assert json.dumps(got.to_json()["sequences"]) == json.dumps(expected.to_json()["sequences"])
    assert got.pred == f"s3://{bucket}/run"  # s3a and s3 name the same run

    target = write_scores([got], f"s3a://{bucket}/run/eval", storage_options=opts)
    with fs.open(f"{bucket}/run/eval/scores.parquet", "rb") as fh:
        scores = pq.read_table(fh)
    assert target.endswith("/eval/scores.parquet") and scores.num_rows == got.scores_table().num_rows > 0


def test_eval_and_report_commands_reach_s3_only_through_the_flag(s3_only_through_options, tmp_path):
    import s3fs

    from helpers import invoke

    bucket, opts = s3_only_through_options
    labels = two_object_sequence()
    gt = write_davis(tmp_path / "gt", {"seq": labels})
    local = write_run(tmp_path / "run", {"seq": {1: labels == 1, 2: labels == 2}})
    fs = s3fs.S3FileSystem(**opts)
    fs.put(str(gt), f"{bucket}/gt", recursive=True)
    fs.put(str(local / "masks" / "seq.parquet"), f"{bucket}/run/masks/seq.parquet")
    flag = ["--storage-options", json.dumps(opts)]

    r = invoke("eval", "--gt", f"s3://{bucket}/gt", "--pred", f"s3://{bucket}/run", "--out", f"s3://{bucket}/run/eval",
               "--json", f"s3://{bucket}/jf.json", *flag)
    assert r.exit_code == 0, r.output
    assert json.loads(fs.cat_file(f"{bucket}/jf.json"))["J&F-Mean"] == pytest.approx(1.0)
    assert fs.exists(f"{bucket}/run/eval/scores.parquet")

    from report_fixtures import make_run

    fs.put(str(make_run(tmp_path / "fake-run", keep=0.3, scale=1.0)), f"{bucket}/fake-run", recursive=True)
    r = invoke("report", f"s3://{bucket}/fake-run", "--html", f"s3://{bucket}/report.html",
               "--json", f"s3://{bucket}/report.json", *flag)
    assert r.exit_code == 0, r.output
    assert b"<svg" in fs.cat_file(f"{bucket}/report.html")
    assert json.loads(fs.cat_file(f"{bucket}/report.json"))["runs"][0]["videos"] == 2

    r = invoke("eval", "--gt", f"s3://{bucket}/gt", "--pred", f"s3://{bucket}/run")  # the flag left out
    assert r.exit_code != 0 and "Traceback" not in r.output


@pytest.mark.parametrize("command", [["eval", "--gt", "g", "--pred", "p"], ["report", "r"], ["export", "r", "-o", "o"],
                                     ["run", "i", "-o", "o", "--random-weights"]])
@pytest.mark.parametrize("value,message", [("{nope", "not valid JSON"), ('["anon"]', "must be a JSON object")])
def test_every_command_checks_storage_options_the_same_way(command, value, message):
    from helpers import invoke

    r = invoke(*command, "--storage-options", value)
    assert r.exit_code == 2 and message in r.output and "--storage-options" in r.output, r.output


def test_python_callers_give_storage_options_as_a_dict_or_as_the_flags_text():
    from fastsam2.cli.options import build_config

    opts = {"anon": True, "client_kwargs": {"region_name": "eu"}}
    for given in (opts, json.dumps(opts)):
        assert build_config(("s3://b/in/",), output="s3://b/out", storage_options=given).storage_options == opts
