"""Self-contained HTML report: summary tables and four inline-SVG plots, no external assets.

A small inline script checks, in the browser, that every plot was laid out and
drew its marks, and records it on ``<body data-plots-rendered=...>``: the test
opens the page in headless Chromium and reads that back.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from html import escape

from fastsam2.report import svg
from fastsam2.report.queries import RANDOM_JF, RANDOM_MARK, Report
from fastsam2.schema import COMPONENTS

MB = 1024 * 1024
MAX_MEMORY_PLOTS = 6

_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f5f5f5; } td.l, th.l { text-align: left; }
tr.baseline td { background: #f3f8ff; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.plots svg { border: 1px solid #eee; }
code, pre { background: #f6f6f6; font-size: 12px; } pre { padding: 8px; white-space: pre-wrap; }
.muted { color: #777; }
.rw { color: #b00020; font-weight: 600; }
.banner { background: #fdecee; border: 2px solid #b00020; color: #b00020; padding: 8px 12px; font-weight: 600; }
"""

_CHECK_JS = """
window.addEventListener('load', function () {
  var plots = Array.prototype.slice.call(document.querySelectorAll('svg.plot'));
  var rendered = 0;
  plots.forEach(function (p) {
    var box = p.getBoundingClientRect();
    var marks = Array.prototype.slice.call(p.querySelectorAll('.mark')).filter(function (m) {
      var b = m.getBBox(); return b.width > 0 || b.height > 0;
    }).length;
    p.setAttribute('data-rendered-marks', marks);
    p.setAttribute('data-rendered-size', Math.round(box.width) + 'x' + Math.round(box.height));
    if (box.width > 0 && box.height > 0 && marks > 0) rendered += 1;
  });
  document.body.setAttribute('data-plots', plots.length);
  document.body.setAttribute('data-plots-rendered', rendered);
});
"""


def _num(v, fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v / scale if scale != 1 else v)


def _pct(v) -> str:
    return _num(None if v is None else 100 * v, "{:+.1f}%") if v is not None else "–"


def _table(headers: list[str], rows: list[list[str]], left: int = 1, classes: list[str] | None = None) -> str:
    out = ["<table><thead><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(headers)]
    out.append("</tr></thead><tbody>")
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        out.append(
            f"<tr{cls}>"
            + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row))
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _run_cell(name: str, random_weights: bool) -> str:
    """A run's name, marked when its weights were random."""
    return escape(name) + (f" <span class='rw'>{RANDOM_MARK}</span>" if random_weights else "")


def _jf_cell(value, random_weights: bool, fmt: str = "{:.3f}") -> str:
    """A J&F number; for random weights it says it means nothing."""
    text = _num(value, fmt)
    return f"{text} <span class='rw'>({RANDOM_JF})</span>" if random_weights and text != "–" else text


def plot_label(name: str, random_weights: bool) -> str:
    """A run's name in plot legends and point labels."""
    return f"{name} ({RANDOM_MARK.lower()})" if random_weights else name


def run_table(report: Report) -> str:
    headers = [
        "Run", "Keep ratio", "Videos", "Failed", "Frames", "FPS", "ms/frame", "Speed-up",
        "Tokens kept", "Mem bank MB", "Bank saving", "Peak MB", "Peak saving", "J&F", "ΔJ&F",
    ]  # fmt: skip
    rows, classes = [], []
    for r in report.run_rows:
        rows.append([
            _run_cell(r["run"], r["random_weights"]) + (" <span class='muted'>(baseline)</span>" if r["is_baseline"] else ""),
            _num(r["keep_ratio"]), _num(r["videos"], "{:d}"), _num(r["failed_videos"], "{:d}"),
            _num(r["frames"], "{:d}"), _num(r["fps"], "{:.1f}"), _num(r["ms_per_frame"], "{:.1f}"),
            _num(r["speedup"], "{:.2f}×"), _num(r["tokens_kept"], "{:.2f}"),
            _num(r["memory_bank_bytes"], "{:.1f}", MB), _pct(r["memory_bank_saving"]),
            _num(r["peak_memory_bytes"], "{:.0f}", MB), _pct(r["peak_memory_saving"]),
            _jf_cell(r["jf_mean"], r["random_weights"]), _jf_cell(r["jf_delta"], _random_vs_baseline(report, r), "{:+.3f}"),
        ])  # fmt: skip
        classes.append("baseline" if r["is_baseline"] else "")
    return _table(headers, rows, classes=classes)


def component_table(report: Report) -> str:
    headers = ["Run", *COMPONENTS, "total"]
    rows = []
    for r in report.run_rows:
        rows.append(
            [_run_cell(r["run"], r["random_weights"]), *[_num(r[f"ms_{c}"], "{:.2f}") for c in COMPONENTS],
             _num(r["ms_per_frame"], "{:.2f}")]
        )
    return _table(headers, rows)


def video_table(report: Report) -> str:
    headers = [
        "Run", "Video", "Status", "Frames", "FPS", "ms/frame", "Speed-up", "Tokens kept",
        "Mem bank MB", "Peak MB", "J&F", "ΔJ&F", "Errors",
    ]  # fmt: skip
    rows = []
    for r in report.video_rows:
        rows.append([
            _run_cell(r["run"], r["random_weights"]), escape(str(r["video_id"])), escape(str(r["status"] or "")),
            _num(r["frames"], "{:d}"), _num(r["fps"], "{:.1f}"), _num(r["ms_per_frame"], "{:.1f}"),
            _num(r["speedup"], "{:.2f}×"), _num(r["tokens_kept"], "{:.2f}"),
            _num(r["memory_bank_bytes"], "{:.1f}", MB), _num(r["peak_memory_bytes"], "{:.0f}", MB),
            _jf_cell(r["jf_mean"], r["random_weights"]), _jf_cell(r["jf_delta"], _random_vs_baseline(report, r), "{:+.3f}"),
            escape(r["error_summary"] or "") if r["errors"] else "",
        ])  # fmt: skip
    return _table(headers, rows, left=3)


def _random_vs_baseline(report: Report, row: dict) -> bool:
    """A J&F difference is meaningless when either side had random weights."""
    return bool(row["random_weights"]) or report.baseline in report.random_runs


def _component_stacks(report: Report) -> dict[str, list]:
    """ms per component per run, plus "other": the part of ms_total no component accounts for."""
    stacks = {c: [r[f"ms_{c}"] for r in report.run_rows] for c in COMPONENTS}
    other = []
    for r in report.run_rows:
        known = sum(r[f"ms_{c}"] or 0.0 for c in COMPONENTS)
        rest = (r["ms_per_frame"] or 0.0) - known
        other.append(rest if rest > 1e-6 else None)
    if any(v is not None for v in other):
        stacks["other"] = other
    return stacks


def plots(report: Report) -> list[str]:
    """The four charts, as SVG strings (placeholders when a run lacks the data)."""
    runs = [r for r in report.run_rows if r["keep_ratio"] is not None]
    labels = [plot_label(r["run"], r["random_weights"]) for r in runs]
    speed = svg.line_chart(
        "speedup", "Speed-up vs baseline by keep ratio",
        [svg.Series("runs", [r["keep_ratio"] for r in runs], [r["speedup"] for r in runs], labels)],
        "keep ratio", f"speed-up (× {report.baseline})", reference_y=1.0,
        empty_message="no run with both a keep ratio and timings",
    )  # fmt: skip
    comps = svg.stacked_bar_chart(
        "components", "ms per frame by component",
        [plot_label(r["run"], r["random_weights"]) for r in report.run_rows],
        _component_stacks(report),
        "ms per frame", empty_message="no per-component timings",
    )  # fmt: skip
    random_jf = any(r["random_weights"] and r["jf_mean"] is not None for r in runs)
    jf = svg.line_chart(
        "jf", "J&F vs keep ratio" + (f" ({RANDOM_JF})" if random_jf else ""),
        [svg.Series("runs", [r["keep_ratio"] for r in runs], [r["jf_mean"] for r in runs],
                    [plot_label(r["run"], r["random_weights"]) + (f": {RANDOM_JF}" if r["random_weights"] else "")
                     for r in runs])],
        "keep ratio", "J&F-Mean", empty_message="no eval results (run fastsam2-batch eval --out RUN/eval)",
    )  # fmt: skip
    return [speed, comps, *memory_plots(report), jf]


def memory_plots(report: Report) -> list[str]:
    """Memory bank over the video, one chart per video (the first few), one line per run."""
    by_video: OrderedDict[str, OrderedDict[str, tuple[list, list]]] = OrderedDict()
    for row in report.memory_series:
        if row["memory_bank_bytes"] is None:
            continue
        xs, ys = by_video.setdefault(row["video_id"], OrderedDict()).setdefault(row["run"], ([], []))
        xs.append(row["frame_idx"])
        ys.append(row["memory_bank_bytes"] / MB)
    if not by_video:
        return [svg.empty_chart("memory", "Memory bank per frame", "no per-frame memory in frames/")]
    run_order = [r.label for r in report.runs]
    random = set(report.random_runs)
    # Videos seen by the most runs first: those are the ones worth comparing.
    videos = sorted(by_video, key=lambda v: (-len(by_video[v]), v))[:MAX_MEMORY_PLOTS]
    out = []
    for v in videos:
        series = [svg.Series(plot_label(run, run in random), *by_video[v][run]) for run in run_order if run in by_video[v]]
        out.append(
            svg.line_chart(
                "memory",
                f"Memory bank per frame - {v}",
                series,
                "frame",
                "memory bank (MB)",
                markers=False,
                width=520,
                height=300,
            )  # fmt: skip
        )
    return out


def render_html(report: Report, one_liners: list[tuple[str, str]] | None = None) -> str:
    """The whole page as one string."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    random = set(report.random_runs)
    runs = "".join(
        f"<li><b>{_run_cell(r.label, r.label in random)}</b>{' (baseline)' if r.label == report.baseline else ''}: "
        f"<code>{escape(r.uri)}</code></li>"
        for r in report.runs
    )
    banner = (
        f"<p class='banner' id='random-weights'>{RANDOM_MARK}: {escape(', '.join(report.random_runs))} "
        f"used no trained checkpoint. Their masks are meaningless, and so is their J&F ({RANDOM_JF}); "
        "speed, tokens kept and memory are still measured.</p>"
        if random else ""
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>fastsam2-batch report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>fastsam2-batch report</h1>", banner,
        f"<p class='muted'>Generated {now}. Speed-up and savings are against <b>{escape(report.baseline)}</b> "
        "over the videos both runs finished. The Parquet output is the source of truth; this page is a view of it.</p>",
        f"<ul>{runs}</ul>",
        "<h2>Runs</h2>", run_table(report),
        "<h2>Plots</h2>", "<div class='plots'>", *plots(report), "</div>",
        "<h2>ms per frame by component</h2>", component_table(report),
        "<h2>Videos</h2>", video_table(report),
    ]  # fmt: skip
    if report.errors:
        rows = [
            [escape(e["run"]), escape(str(e["video_id"])), escape(str(e["stage"])), escape(str(e["error_type"])),
             escape(str(e["message"] or ""))[:300]]
            for e in report.errors
        ]  # fmt: skip
        parts += ["<h2>Errors</h2>", _table(["Run", "Video", "Stage", "Type", "Message"], rows, left=5)]
    if one_liners:
        parts.append("<h2>Query it yourself (DuckDB)</h2>")
        for what, sql in one_liners:
            parts.append(f"<p>{escape(what)}</p><pre>{escape(sql)}</pre>")
    parts += [f"<script>{_CHECK_JS}</script>", "</body></html>"]
    return "\n".join(parts)
