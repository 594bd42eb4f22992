"""Inline SVG line charts for the HTML reports (demo, training): no JavaScript, no external
files, readable anywhere. Outside `demo/` so the trainer's report can use it without a cycle.

`line_chart` draws one or more series over shared x values. With `categorical=True` the x
values are spaced evenly and labelled as given (the α sweep 0, 0.05, 0.1, 0.2, 0.5, 1 would
otherwise crowd its interesting end into a corner); otherwise x is linear (training steps).
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WIDTH, HEIGHT = 380, 230
LEFT, RIGHT, TOP, BOTTOM = 80, 14, 28, 40


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi == lo:
        return [lo]
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _num(x: float) -> str:
    return f"{x:.4g}"


def tick_label(value: float, step: float) -> str:
    """Enough decimals that neighbouring ticks `step` apart read differently (SSIM near 1 moves
    in the 5th decimal), at most 8; large values in general format."""
    if step <= 0 or not math.isfinite(step) or abs(value) >= 1e5:
        return _num(value)
    decimals = min(8, max(0, 1 - math.floor(math.log10(step))))
    return f"{value:.{decimals}f}"


def scale(value: float, lo: float, hi: float, a: float, b: float) -> float:
    """Map value in [lo, hi] to [a, b]; the middle of [a, b] when the range is empty."""
    if hi == lo:
        return (a + b) / 2
    return a + (value - lo) * (b - a) / (hi - lo)


TITLE_SIZE = 13
TITLE_EM = 0.62  # a generous mean advance of a bold sans-serif glyph, in em


def title_text(title: str) -> str:
    """The centred bold title; one longer than the chart is likely to draw ("change vs base: SSIM
    between frames (higher = consistent)" in 380 px) is fitted into the width with `textLength`,
    so the browser narrows its glyphs instead of cutting both ends off."""
    room = WIDTH - 12
    fit = f' textLength="{room}" lengthAdjust="spacingAndGlyphs"' if len(title) * TITLE_SIZE * TITLE_EM > room else ""
    return (f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" font-size="{TITLE_SIZE}" font-weight="bold"{fit}>'
            f"{escape(title)}</text>")


def line_chart(
    series: dict[str, list[float]],
    x: list[float],
    title: str,
    x_label: str,
    y_label: str,
    categorical: bool = False,
    markers: bool = True,
    floor: float | None = None,
    errors: dict[str, list[tuple[float, float] | None]] | None = None,
    reference: float | None = None,
) -> str:
    """An <svg> element: each series a polyline (with point markers), legend top right (names
    right-aligned against their colour swatches, so a long name stays inside the chart).
    `errors`: per series, an interval (low, high) per point drawn as an error bar (None: none);
    `reference`: a dashed horizontal line (e.g. 0 = no change from the base).
    `floor`: the axis does not go below it (a loss is never negative, so its axis starts at 0
    at the lowest; the padding would otherwise show a range no value can take)."""
    errors = errors or {}
    bars = [b for name in series for b in errors.get(name, []) if b is not None and all(map(math.isfinite, b))]
    finite = [v for vals in series.values() for v in vals if math.isfinite(v)] + [v for b in bars for v in b]
    finite += [reference] if reference is not None else []
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.01 or 1.0
    lo, hi = lo - pad, hi + pad
    if floor is not None and lo < floor <= min(finite, default=floor):
        lo = floor
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    if categorical:
        xs = [scale(i, 0, max(1, len(x) - 1), x0, x1) for i in range(len(x))]
    else:
        xs = [scale(v, min(x), max(x), x0, x1) for v in x]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
           title_text(title),
           f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>',
           f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>']  # fmt: skip
    y_ticks = _ticks(lo, hi)
    for t in y_ticks:
        y = scale(t, lo, hi, y0, y1)
        out.append(f'<line x1="{x0 - 3}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 5}" y="{y + 4:.1f}" text-anchor="end" font-size="10">'
                   f"{tick_label(t, (hi - lo) / max(1, len(y_ticks) - 1))}</text>")
    if categorical:
        x_ticks = list(zip(xs, x))
    else:
        x_ticks = [(scale(t, min(x), max(x), x0, x1), t) for t in _ticks(min(x), max(x))]
    x_step = (max(x) - min(x)) / 4 if not categorical else 0.0
    for px, label in x_ticks:
        text = _num(label) if categorical else tick_label(label, x_step)
        out.append(f'<text x="{px:.1f}" y="{y0 + 14}" text-anchor="middle" font-size="10">{text}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{HEIGHT - 6}" text-anchor="middle" font-size="11">{escape(x_label)}</text>')
    out.append(f'<text x="12" y="{(y0 + y1) / 2}" text-anchor="middle" font-size="11" '
               f'transform="rotate(-90 12 {(y0 + y1) / 2})">{escape(y_label)}</text>')  # fmt: skip
    if reference is not None:
        ry = scale(reference, lo, hi, y0, y1)
        out.append(f'<line x1="{x0}" y1="{ry:.1f}" x2="{x1}" y2="{ry:.1f}" stroke="#888" stroke-dasharray="4 3"/>')
    for i, (name, values) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        shift = (i - (len(series) - 1) / 2) * 4  # bars of different series side by side, not on top
        for px, bar in zip(xs, errors.get(name, [])):
            if bar is None or not all(map(math.isfinite, bar)):
                continue
            ya, yb = (scale(v, lo, hi, y0, y1) for v in bar)
            bx = px + shift
            out.append(f'<path class="errbar" d="M{bx:.1f},{ya:.1f}V{yb:.1f}M{bx - 3:.1f},{ya:.1f}h6M{bx - 3:.1f},{yb:.1f}h6" '
                       f'stroke="{color}" fill="none" stroke-width="1.2"/>')
        pts = [(px, scale(v, lo, hi, y0, y1)) for px, v in zip(xs, values) if math.isfinite(v)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{path}"/>')
        if markers:
            out += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.6" fill="{color}"/>' for px, py in pts]
        ly = TOP + 4 + 13 * i
        # the swatch at the right edge and the name ending left of it: a long name grows into the
        # plot, never past the chart's right edge (where the svg would cut it off)
        out.append(f'<line x1="{x1 - 16}" y1="{ly}" x2="{x1 - 2}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text class="legend" x="{x1 - 20}" y="{ly + 4}" font-size="10" text-anchor="end">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)
