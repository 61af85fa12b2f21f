"""``fastsam2-batch report``: DuckDB numbers over fake runs, the HTML (in headless Chromium), S3."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from report_fixtures import DENSE_EVAL, MB, PRUNED_EVAL, VIDEOS, frame_ms, make_run, run_chromium, write_eval

from fastsam2.cli.report import report_command
from fastsam2.report.queries import build_report, one_liners
from fastsam2.schema import COMPONENTS


def expected_jf(scores):
    return (np.mean([j for j, _ in scores.values()]) + np.mean([f for _, f in scores.values()])) / 2


def mean_ms(scale: float, videos=VIDEOS, key="ms_total") -> float:
    vals = [frame_ms(scale, i)[key] for n in videos.values() for i in range(n)]
    return float(np.mean(vals))


@pytest.fixture
def runs(tmp_path):
    dense = make_run(tmp_path / "dense", keep=1.0, scale=2.0)
    pruned = make_run(tmp_path / "pruned50", keep=0.5, scale=1.0, failed="cows", hive=True)
    write_eval(dense, DENSE_EVAL)
    write_eval(pruned, PRUNED_EVAL)
    return dense, pruned


def by(rows, **kw):
    return next(r for r in rows if all(r[k] == v for k, v in kw.items()))


def test_report_numbers(runs):
    dense, pruned = runs
    rep = build_report([str(dense), str(pruned)])
    d, p = by(rep.run_rows, run="dense"), by(rep.run_rows, run="pruned50")
    assert rep.baseline == "dense" and d["is_baseline"] and not p["is_baseline"]
    # Speed-up is the ratio of the ms per frame we wrote (frame-weighted over both videos).
    assert d["ms_per_frame"] == pytest.approx(mean_ms(2.0))
    assert p["speedup"] == pytest.approx(mean_ms(2.0) / mean_ms(1.0))
    assert p["fps"] == pytest.approx(1000 / mean_ms(1.0))
    assert d["speedup"] == pytest.approx(1.0)
    for c in COMPONENTS:
        assert p[f"ms_{c}"] == pytest.approx(mean_ms(1.0, key=f"ms_{c}"))
    assert p["tokens_kept"] == pytest.approx(0.5) and d["tokens_kept"] == pytest.approx(1.0)
    # Memory-bank peak per video is 4 MB * keep ratio: pruning to 0.5 saves half.
    assert p["memory_bank_bytes"] == 2 * MB
    assert p["memory_bank_saving"] == pytest.approx(0.5)
    assert p["peak_memory_saving"] == pytest.approx(0.5)
    assert (p["failed_videos"], d["failed_videos"]) == (1, 0)
    assert p["frames"] == sum(VIDEOS.values()) and p["videos"] == 2
    assert d["jf_mean"] == pytest.approx(expected_jf(DENSE_EVAL))
    assert p["jf_delta"] == pytest.approx(expected_jf(PRUNED_EVAL) - expected_jf(DENSE_EVAL))

    dog = by(rep.video_rows, run="pruned50", video_id="dog")
    ms_dog = lambda s: np.mean([frame_ms(s, i)["ms_total"] for i in range(VIDEOS["dog"])])  # noqa: E731
    assert dog["speedup"] == pytest.approx(ms_dog(2.0) / ms_dog(1.0))
    assert dog["jf_mean"] == pytest.approx((np.mean([0.66, 0.5]) + np.mean([0.6, 0.3])) / 2)
    cows = by(rep.video_rows, run="pruned50", video_id="cows")
    assert cows["status"] == "failed" and cows["errors"] == 1 and "decode" in cows["error_summary"]
    assert len(rep.memory_series) == 2 * sum(VIDEOS.values())


def test_baseline_option_and_cli_json(runs, tmp_path):
    dense, pruned = runs
    out = tmp_path / "report.json"
    r = CliRunner().invoke(report_command, [str(dense), str(pruned), "--baseline", str(pruned), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "Runs (baseline: pruned50)" in r.output and "car-shadow" in r.output and "decode: ValueError" in r.output
    doc = json.loads(out.read_text())
    d = by(doc["runs"], run="dense")
    assert doc["baseline"] == "pruned50"
    assert d["speedup"] == pytest.approx(mean_ms(1.0) / mean_ms(2.0))
    assert d["memory_bank_saving"] == pytest.approx(-1.0)  # dense uses twice the pruned bank


def test_report_bad_input_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for args, msg in [([str(tmp_path / "missing")], "run not found"), ([str(tmp_path / "empty")], "not a run output")]:
        r = CliRunner().invoke(report_command, args)
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output


def test_one_liners_run_on_the_output(runs):
    """The README's DuckDB one-liners work on the files as written (hive folders included)."""
    dense, pruned = runs
    (per_video, speedup, jf) = one_liners([str(dense), str(pruned)])
    rows = duckdb.sql(per_video[1].replace(str(dense), str(pruned))).fetchall()
    assert {r[0] for r in rows} == set(VIDEOS) and all(r[3] == pytest.approx(0.5) for r in rows)
    rows = dict(duckdb.sql(speedup[1]).fetchall())
    ms_dog = lambda s: sum(frame_ms(s, i)["ms_total"] for i in range(VIDEOS["dog"]))  # noqa: E731
    assert rows["dog"] == pytest.approx(ms_dog(2.0) / ms_dog(1.0))
    rows = dict(duckdb.sql(jf[1]).fetchall())
    assert rows["car-shadow"] == pytest.approx((0.88 + 0.79) / 2)


def test_report_over_s3(runs, s3_env):
    import s3fs

    dense, pruned = runs
    fs = s3fs.S3FileSystem(endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for run in (dense, pruned):
        fs.put(str(run), f"{s3_env}/runs/{run.name}", recursive=True)
    uris = [f"s3://{s3_env}/runs/dense", f"s3://{s3_env}/runs/pruned50"]
    local, remote = build_report([str(dense), str(pruned)]), build_report(uris)
    for a, b in zip(local.run_rows, remote.run_rows):
        for key in ("ms_per_frame", "speedup", "memory_bank_saving", "tokens_kept", "jf_mean", "failed_videos"):
            assert a[key] == pytest.approx(b[key]), key
    # Eval rows name the local path as `pred`; inside the copied run's eval/ they still count.
    assert remote.run_rows[0]["jf_mean"] == pytest.approx(expected_jf(DENSE_EVAL))


# --------------------------------------------------------------------------- HTML


def _html(runs, tmp_path) -> tuple[Path, str]:
    dense, pruned = runs
    out = tmp_path / "report.html"
    r = CliRunner().invoke(report_command, [str(dense), str(pruned), "--html", str(out)])
    assert r.exit_code == 0, r.output
    return out, out.read_text()


N_PLOTS = 2 + len(VIDEOS) + 1  # speed-up, components, memory per video, J&F


def test_html_is_self_contained_with_plots(runs, tmp_path):
    _, page = _html(runs, tmp_path)
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", page), "no external assets"
    assert page.count('<svg class="plot"') == N_PLOTS
    for plot in ("speedup", "components", "memory", "jf"):
        assert f'data-plot="{plot}"' in page
    assert 'class="plot empty"' not in page
    assert "read_parquet(" in page  # the DuckDB one-liners


def test_html_plots_render_in_headless_chromium(runs, tmp_path):
    out, _ = _html(runs, tmp_path)
    dom = run_chromium(["--virtual-time-budget=5000", "--dump-dom", out.as_uri()], tmp_path).stdout
    # The page's own check ran in the browser: every plot laid out with visible marks.
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert f'data-plots="{N_PLOTS}"' in body, body
    assert f'data-plots-rendered="{N_PLOTS}"' in body, body
    marks = [int(m) for m in re.findall(r'data-rendered-marks="(\d+)"', dom)]
    assert len(marks) == N_PLOTS and min(marks) > 0
    sizes = re.findall(r'data-rendered-size="(\d+)x(\d+)"', dom)
    assert all(int(w) > 300 and int(h) > 200 for w, h in sizes)

    shot = tmp_path / "shot.png"
    run_chromium(["--window-size=1400,1800", f"--screenshot={shot}", out.as_uri()], tmp_path)
    img = np.asarray(Image.open(shot).convert("RGB"))
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert len(colours) > 50, "screenshot looks blank"
    # The first series colour of the plots is on screen.
    assert np.any(np.all(np.abs(img.astype(int) - (0x4C, 0x72, 0xB0)) <= 2, axis=-1))


def test_eval_then_report_on_real_masks(shared_data, tmp_path):
    """eval --out RUN/eval, then report shows the same J&F as eval's JSON."""
    from davis_fixtures import read_stack, write_run

    from fastsam2.cli.eval import eval_command

    seqs = {"car-shadow": 40, "kite-surf": 50}
    osvos = shared_data / "osvos-davis2016-val-binarized"
    run = write_run(tmp_path / "run", {s: {1: read_stack(osvos / s) == 1} for s in seqs})
    make_run(run, keep=0.7, scale=1.0, videos=seqs)
    r = CliRunner().invoke(eval_command, ["--gt", str(shared_data / "davis2016-val"), "--pred", str(run),
                                          "--sequences", ",".join(seqs), "--json", str(tmp_path / "e.json"),
                                          "--out", str(run / "eval")])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "e.json").read_text())
    rep = build_report([str(run)])
    assert rep.run_rows[0]["jf_mean"] == pytest.approx(doc["J&F-Mean"])
    assert by(rep.video_rows, video_id="kite-surf")["jf_mean"] == pytest.approx(
        doc["sequences"]["kite-surf"]["J&F-Mean"]
    )
