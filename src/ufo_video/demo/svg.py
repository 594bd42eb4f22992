"""The demo report's charts: `ufo_video.charts` (shared with the training report)."""

from ufo_video.charts import PALETTE, line_chart, scale, tick_label

__all__ = ["PALETTE", "line_chart", "scale", "tick_label"]
