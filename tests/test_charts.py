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
