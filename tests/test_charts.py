"""Chart legends stay inside the chart: names end left of their swatch at the right edge, so a
long name (the training report's "loss (smoothed)") grows into the plot, never past the svg."""

from __future__ import annotations

import re

from ufo_video.charts import WIDTH, line_chart


def test_legend_names_end_inside_the_chart():
    svg = line_chart({"loss": [1.0, 0.5], "loss (smoothed)": [1.0, 0.7]}, [1, 2], "training loss", "step", "loss")
    legends = re.findall(r'<text class="legend" x="([\d.]+)"[^>]*text-anchor="end"[^>]*>([^<]+)</text>', svg)
    assert [name for _, name in legends] == ["loss", "loss (smoothed)"]
    assert all(float(x) <= WIDTH - 20 for x, _ in legends)  # the name's right end, left of the swatch
    swatches = re.findall(r'<line x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)"[^>]*stroke-width="2"/>', svg)
    assert len(swatches) == 2 and all(float(b) < WIDTH for _, b in swatches)


def test_a_long_title_is_fitted_into_the_chart_a_short_one_kept():
    long = "change vs base: SSIM between frames (higher = consistent)"  # the sweep's; cut at both ends before
    svg = line_chart({"a": [0.0, 1.0]}, [0, 1], long, "weight", "ssim", categorical=True)
    [fit] = re.findall(r'<text [^>]*textLength="([\d.]+)" lengthAdjust="spacingAndGlyphs">([^<]+)</text>', svg)
    assert float(fit[0]) <= WIDTH - 10 and fit[1] == long
    short = line_chart({"a": [0.0, 1.0]}, [0, 1], "training loss", "step", "loss")
    assert "textLength" not in short and ">training loss</text>" in short
