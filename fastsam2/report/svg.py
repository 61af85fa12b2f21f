"""Dependency-free SVG charts for the HTML report.

Why hand-written SVG: the report must be one self-contained file that opens
anywhere (no CDN, no JavaScript plotting library) and the project should not pull
matplotlib in just for four charts.  Every chart is an ``<svg class="plot">`` whose
data marks carry ``class="mark"``, so tests (and the page's own check) can count
what was drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD")

WIDTH, HEIGHT = 640, 360
MARGIN = {"left": 70, "right": 150, "top": 40, "bottom": 50}


@dataclass
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    labels: Sequence[str] = field(default_factory=tuple)  # optional text next to each point


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(v, 12))
    return ticks


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:g}"


def _frame(plot_id: str, title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg class="plot" data-plot="{escape(plot_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2:.1f}" y="22" text-anchor="middle" font-size="15" font-weight="600">'
        f"{escape(title)}</text>",
    ]


def empty_chart(plot_id: str, title: str, message: str, width: int = WIDTH, height: int = HEIGHT) -> str:
    """A placeholder chart saying why there is nothing to draw (e.g. no eval results)."""
    parts = _frame(plot_id, title, width, height)
    parts[0] = parts[0].replace('class="plot"', 'class="plot empty"')
    parts.append(
        f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" fill="#777" font-size="13">'
        f"{escape(message)}</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


class _Axes:
    def __init__(self, xlo: float, xhi: float, ylo: float, yhi: float, width: int, height: int):
        self.xt = nice_ticks(xlo, xhi)
        self.yt = nice_ticks(ylo, yhi)
        self.x0, self.x1 = MARGIN["left"], width - MARGIN["right"]
        self.y0, self.y1 = height - MARGIN["bottom"], MARGIN["top"]

    def x(self, v: float) -> float:
        lo, hi = self.xt[0], self.xt[-1]
        return self.x0 + (v - lo) / ((hi - lo) or 1) * (self.x1 - self.x0)

    def y(self, v: float) -> float:
        lo, hi = self.yt[0], self.yt[-1]
        return self.y0 - (v - lo) / ((hi - lo) or 1) * (self.y0 - self.y1)

    def draw(self, x_label: str, y_label: str, x_ticks: bool = True) -> list[str]:
        out = ['<g class="axes" font-size="11" fill="#333">']
        for t in self.yt:
            yy = self.y(t)
            out.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{self.x0 - 6}" y="{yy + 4:.1f}" text-anchor="end">{_fmt_tick(t)}</text>')
        if x_ticks:
            for t in self.xt:
                xx = self.x(t)
                out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{self.y0}" y2="{self.y0 + 4}" stroke="#333"/>')
                out.append(f'<text x="{xx:.1f}" y="{self.y0 + 17}" text-anchor="middle">{_fmt_tick(t)}</text>')
        out.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{self.y0}" y2="{self.y0}" stroke="#333"/>')
        out.append(f'<line x1="{self.x0}" x2="{self.x0}" y1="{self.y0}" y2="{self.y1}" stroke="#333"/>')
        mid_x = (self.x0 + self.x1) / 2
        out.append(
            f'<text x="{mid_x:.1f}" y="{self.y0 + 38}" text-anchor="middle" font-size="12">{escape(x_label)}</text>'
        )
        mid_y = (self.y0 + self.y1) / 2
        out.append(
            f'<text x="16" y="{mid_y:.1f}" text-anchor="middle" font-size="12" '
            f'transform="rotate(-90 16 {mid_y:.1f})">{escape(y_label)}</text>'
        )
        out.append("</g>")
        return out


def _wrap(text: str, width: int = 21, max_lines: int = 3) -> list[str]:
    """Split a legend entry into short lines (words kept whole where they fit)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [" ".join(lines[max_lines - 1 :])]
    return [ln if len(ln) <= width else ln[: width - 1] + "…" for ln in lines] or [""]


def _legend(names: Sequence[str], width: int, dashed: Sequence[bool] = ()) -> list[str]:
    """Colour key, one entry per series; long names wrap onto a second line rather than lose their end."""
    x = width - MARGIN["right"] + 12
    out = ['<g class="legend" font-size="11">']
    y = MARGIN["top"] + 6
    for i, name in enumerate(names):
        if i < len(dashed) and dashed[i]:
            out.append(f'<line x1="{x}" x2="{x + 12}" y1="{y - 3}" y2="{y - 3}" stroke="{color(i)}" '
                       f'stroke-width="3" stroke-dasharray="3 2"/>')
        else:
            out.append(f'<rect x="{x}" y="{y - 9}" width="12" height="12" fill="{color(i)}"/>')
        lines = _wrap(name)
        spans = "".join(f'<tspan x="{x + 17}" dy="{0 if k == 0 else 12}">{escape(ln)}</tspan>'
                        for k, ln in enumerate(lines))
        out.append(f'<text x="{x + 17}" y="{y + 1}">{spans}</text>')
        y += 6 + 12 * len(lines)
    out.append("</g>")
    return out


def _place_label(x: float, y: float, placed: list[tuple[float, float]], text_w: float) -> float:
    """The y of a point label that overlaps none already placed (moved down in 12 px steps)."""
    while any(abs(x - px) < text_w and abs(y - py) < 11 for px, py in placed):
        y += 12
    placed.append((x, y))
    return y


def _finite_pairs(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    out = []
    for x, y in zip(xs, ys):
        if x is None or y is None:
            continue
        if math.isfinite(float(x)) and math.isfinite(float(y)):
            out.append((float(x), float(y)))
    return out


def line_chart(
    plot_id: str,
    title: str,
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    markers: bool = True,
    lines: bool = True,
    y_from_zero: bool = True,
    reference_y: float | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
    empty_message: str = "no data",
) -> str:
    """Lines and/or points per series; optional dashed horizontal reference (e.g. speed-up 1)."""
    pts = [_finite_pairs(s.xs, s.ys) for s in series]
    allp = [p for ps in pts for p in ps]
    if not allp:
        return empty_chart(plot_id, title, empty_message, width, height)
    xs = [p[0] for p in allp]
    ys = [p[1] for p in allp] + ([reference_y] if reference_y is not None else [])
    ylo = min(0.0, min(ys)) if y_from_zero else min(ys)
    ax = _Axes(min(xs), max(xs), ylo, max(ys), width, height)
    parts = _frame(plot_id, title, width, height)
    parts += ax.draw(x_label, y_label)
    if reference_y is not None:
        yy = ax.y(reference_y)
        parts.append(
            f'<line x1="{ax.x0}" x2="{ax.x1}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#999" stroke-dasharray="4 3"/>'
        )
    # A series drawn exactly over an earlier one would vanish: dash it, give it markers, say so.
    same_as = {i: next((k for k in range(i) if pts[k] == ps), None) for i, ps in enumerate(pts) if ps}
    placed: list[tuple[float, float]] = []
    for i, (s, ps) in enumerate(zip(series, pts)):
        if not ps:
            continue
        c = color(i)
        twin = same_as.get(i)
        parts.append(f'<g class="series" data-series="{escape(s.name)}"'
                     + (f' data-same-as="{escape(series[twin].name)}"' if twin is not None else "") + ">")
        order = sorted(range(len(ps)), key=lambda k: ps[k][0])
        # Points sharing an x (two runs at one keep ratio) are not a trend: no line through them.
        distinct_x = len({p[0] for p in ps}) == len(ps)
        if lines and len(ps) > 1 and distinct_x:
            d = " ".join(
                f"{'M' if j == 0 else 'L'}{ax.x(ps[k][0]):.1f},{ax.y(ps[k][1]):.1f}" for j, k in enumerate(order)
            )
            dash = ' stroke-dasharray="6 4"' if twin is not None else ""
            parts.append(f'<path class="mark line" d="{d}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
        if markers or len(ps) == 1 or twin is not None or not distinct_x:
            for k, (x, y) in enumerate(ps):
                tip = f"{s.name}: x={x:g}, y={y:.4g}"
                r = 4 + 2 * (twin is not None)  # a ring around the twin's dot
                fill = "none" if twin is not None else c
                parts.append(
                    f'<circle class="mark point" cx="{ax.x(x):.1f}" cy="{ax.y(y):.1f}" r="{r}" fill="{fill}" '
                    f'stroke="{c}" stroke-width="2"><title>{escape(tip)}</title></circle>'
                )
                if k < len(s.labels) and s.labels[k]:
                    label = str(s.labels[k])
                    ly = _place_label(ax.x(x) + 6, ax.y(y) - 6, placed, 6.0 * len(label))
                    parts.append(
                        f'<text class="point-label" x="{ax.x(x) + 6:.1f}" y="{ly:.1f}" font-size="10" fill="{c}">'
                        f"{escape(label)}</text>"
                    )
        parts.append("</g>")
    if len(series) > 1:
        names = [s.name + (f" (same as {series[same_as[i]].name})" if same_as.get(i) is not None else "")
                 for i, s in enumerate(series)]
        parts += _legend(names, width, [same_as.get(i) is not None for i in range(len(series))])
    parts.append("</svg>")
    return "\n".join(parts)


def stacked_bar_chart(
    plot_id: str,
    title: str,
    categories: Sequence[str],
    stacks: dict[str, Sequence[float]],
    y_label: str,
    width: int = WIDTH,
    height: int = HEIGHT,
    empty_message: str = "no data",
) -> str:
    """One vertical bar per category, split into the stacks (e.g. ms per component per run)."""
    totals = [
        sum(v for v in (vals[i] for vals in stacks.values()) if v is not None and math.isfinite(v))
        for i in range(len(categories))
    ]
    if not categories or not any(t > 0 for t in totals):
        return empty_chart(plot_id, title, empty_message, width, height)
    ax = _Axes(0, 1, 0, max(totals), width, height)
    parts = _frame(plot_id, title, width, height)
    parts += ax.draw("", y_label, x_ticks=False)
    slot = (ax.x1 - ax.x0) / len(categories)
    bar_w = min(60.0, slot * 0.6)
    for i, cat in enumerate(categories):
        cx = ax.x0 + slot * (i + 0.5)
        base = 0.0
        for k, (name, vals) in enumerate(stacks.items()):
            v = vals[i]
            if v is None or not math.isfinite(v) or v <= 0:
                continue
            y_top, y_bot = ax.y(base + v), ax.y(base)
            parts.append(
                f'<rect class="mark bar" x="{cx - bar_w / 2:.1f}" y="{y_top:.1f}" width="{bar_w:.1f}" '
                f'height="{max(y_bot - y_top, 0.5):.1f}" fill="{color(k)}">'
                f"<title>{escape(f'{cat} - {name}: {v:.2f}')}</title></rect>"
            )
            base += v
        label = cat if len(cat) <= 14 else cat[:13] + "…"
        parts.append(f'<text x="{cx:.1f}" y="{ax.y0 + 16}" text-anchor="middle" font-size="11">{escape(label)}</text>')
        parts.append(
            f'<text x="{cx:.1f}" y="{ax.y(base) - 4:.1f}" text-anchor="middle" font-size="10">{base:.1f}</text>'
        )
    parts += _legend(list(stacks), width)
    parts.append("</svg>")
    return "\n".join(parts)
