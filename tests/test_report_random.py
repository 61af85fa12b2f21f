"""Reports that cannot mislead: random-weight runs marked everywhere they show; honest plots."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image
from report_fixtures import DENSE_EVAL, PRUNED_EVAL, make_run, run_chromium, write_eval

from fastsam2.report import svg
from fastsam2.cli.report import report_command
from fastsam2.report.html import render_html
from fastsam2.report.queries import RANDOM_JF, build_report

MARK = "<span class='rw'>RANDOM WEIGHTS</span>"


def set_random_weights(run, value: bool) -> None:
    for f in (run / "videos").glob("*.parquet"):
        t = pq.read_table(f)
        col = t.schema.get_field_index("random_weights")
        pq.write_table(t.set_column(col, t.schema.field(col), pa.array([value] * t.num_rows, pa.bool_())), f)


@pytest.fixture
def runs(tmp_path):
    """A trained dense run and two random-weight runs at the same keep ratio with identical memory."""
    dense = make_run(tmp_path / "dense", keep=1.0, scale=2.0)
    a = make_run(tmp_path / "pruned50", keep=0.5, scale=1.0)
    b = make_run(tmp_path / "pruned50b", keep=0.5, scale=1.0)
    set_random_weights(dense, False)
    for run in (a, b):
        set_random_weights(run, True)
    write_eval(dense, DENSE_EVAL)
    write_eval(a, PRUNED_EVAL)
    write_eval(b, PRUNED_EVAL)
    return dense, a, b


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    return page[start: page.index("</table>", start)]


def test_html_marks_random_runs_everywhere(runs):
    rep = build_report([str(r) for r in runs])
    assert rep.random_runs == ["pruned50", "pruned50b"]
    page = render_html(rep)
    header = page[: page.index("<h2>")]
    assert "id='random-weights'" in header and "pruned50, pruned50b" in header and RANDOM_JF in header
    for title in ("Runs", "ms per frame by component", "Videos"):
        rows = re.findall(r"<tr[^>]*><td.*?</tr>", _section(page, title))
        assert rows
        for row in rows:
            assert (MARK in row) == ("pruned50" in row), (title, row)  # only the random runs are marked
    runs_rows = re.findall(r"<tr[^>]*><td.*?</tr>", _section(page, "Runs"))
    for row in runs_rows:
        # J&F of a random run, and every ΔJ&F against it or from it, says it is meaningless.
        assert (RANDOM_JF in row) == ("pruned50" in row)
    jf_plot = page[page.index('data-plot="jf"'):]
    jf_plot = jf_plot[: jf_plot.index("</svg>")]
    assert f"J&amp;F vs keep ratio ({RANDOM_JF})" in jf_plot
    assert "pruned50 (random weights): random weights: meaningless" in jf_plot


def test_plots_do_not_hide_or_join_runs_at_one_keep_ratio(runs):
    page = render_html(build_report([str(r) for r in runs]))
    speed = page[page.index('data-plot="speedup"'):]
    speed = speed[: speed.index("</svg>")]
    assert 'class="mark line"' not in speed  # two runs at keep 0.5: no vertical "trend" line
    labels = re.findall(r'<text class="point-label" x="([\d.]+)" y="([\d.]+)"[^>]*>([^<]+)</text>', speed)
    assert len(labels) == 3
    positions = [(x, y) for x, y, _ in labels]
    assert len(set(positions)) == 3, labels  # the two runs at 0.5 have the same speed-up: labels offset
    # Memory of the two identical random runs: the second is dashed, ringed and named as such.
    memory = page[page.index('data-plot="memory"'):]
    memory = memory[: memory.index("</svg>")]
    assert 'data-same-as="pruned50 (random weights)"' in memory
    assert "stroke-dasharray=\"6 4\"" in memory and 'fill="none" stroke=' in memory
    assert "same as" in memory and "(random" in memory  # in the legend, wrapped not cut


def test_line_chart_keeps_lines_for_distinct_x():
    chart = svg.line_chart("t", "t", [svg.Series("a", [0.3, 0.5, 1.0], [1, 2, 3])], "x", "y")
    assert chart.count('class="mark line"') == 1
    same_x = svg.line_chart("t", "t", [svg.Series("a", [0.5, 0.5, 1.0], [1, 2, 3])], "x", "y")
    assert 'class="mark line"' not in same_x and same_x.count('class="mark point"') == 3


def test_terminal_report_marks_random_runs(runs):
    r = CliRunner().invoke(report_command, [str(x) for x in runs])
    assert r.exit_code == 0, r.output
    first = r.output.splitlines()[0]
    assert first.startswith("RANDOM WEIGHTS: pruned50, pruned50b")
    runs_part = r.output[: r.output.index("ms per frame by component")]
    rows = [ln for ln in runs_part.splitlines() if "pruned50" in ln and "│" in ln]
    assert len(rows) == 2 and all("[RANDOM WEIGHTS]" in ln and RANDOM_JF in ln for ln in rows)
    dense_row = next(ln for ln in runs_part.splitlines() if ln.strip("│ ").startswith("dense"))
    assert "RANDOM" not in dense_row


def test_random_marking_renders_in_headless_chromium(runs, tmp_path):
    out = tmp_path / "report.html"
    r = CliRunner().invoke(report_command, [*[str(x) for x in runs], "--html", str(out)])
    assert r.exit_code == 0, r.output
    dom = run_chromium(["--virtual-time-budget=5000", "--dump-dom", out.as_uri()], tmp_path).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    n = int(re.search(r'data-plots="(\d+)"', body).group(1))
    assert f'data-plots-rendered="{n}"' in body, body
    banner = re.search(r"<p class=\"banner\" id=\"random-weights\">(.*?)</p>", dom, re.S)
    assert banner and "RANDOM WEIGHTS: pruned50, pruned50b" in banner.group(1)
    shot = tmp_path / "shot.png"
    run_chromium(["--window-size=1400,900", f"--screenshot={shot}", out.as_uri()], tmp_path)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = np.all(np.abs(img - (0xB0, 0x00, 0x20)) <= 8, axis=-1)
    assert red[:300].sum() > 200, "the red banner is not on screen at the top of the page"
