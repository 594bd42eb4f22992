"""sweep.html: one self-contained page for a `ufo-video sweep` (like the demo's report).

Grid video, the recommendation and its rule, charts of consistency and motion against the weight
(one line per checkpoint), the metrics table and the trend verdict computed by
`eval.trend_verdict.verdict`, as in the demo's report (never assumed). Inline SVG and CSS only
(`charts`, `report_style`); the videos are referenced by relative paths so the page works when
the folder is moved.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from ufo_video.atomic import write_text_atomic
from ufo_video.charts import line_chart
from ufo_video.report_style import CSS

# below this many denoising steps the videos are mostly noise, and so is any trend measured on
# them (the demo's quick plan uses 2; its full plan's 12 already give clean tiny-base videos)
FEW_STEPS = 10
LEGEND_CHARS = 10  # what fits in the charts' legend
CHARTED = (("ssim", "SSIM between frames (higher = consistent)"),
           ("warp_error", "warp error (lower = consistent)"),
           ("flow_px", "optical flow, px/frame (motion)"))  # fmt: skip


def _cell(x) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:.4g}" if isinstance(x, float) else escape(str(x))


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def legend_names(labels: list[str]) -> dict[str, str]:
    """Short names for the legend: "step N" for checkpoint-N files, else the label cut to fit."""
    short = {}
    for label in labels:
        m = re.fullmatch(r"(?:.*/)?checkpoint-(\d+)", label)
        name = f"step {m[1]}" if m else label if len(label) <= LEGEND_CHARS else label[: LEGEND_CHARS - 1] + "~"
        short[label] = name if name not in short.values() else f"{len(short) + 1}: {name}"
    return short


def charts(record: dict) -> str:
    """SVG line charts of each CHARTED metric against the weight, one series per checkpoint."""
    weights = record["weights"]
    by = {(e["checkpoint"], e["weight"]): e["metrics"] for e in record["videos"]}
    names = legend_names(record["checkpoints"])
    out = []
    for metric, title in CHARTED:
        series = {names[c]: [float(by[(c, w)][metric]) for w in weights] for c in record["checkpoints"]}
        out.append(line_chart(series, weights, title, "LoRA weight (evenly spaced)", metric, categorical=True))
    return '<div class="charts">' + "".join(out) + "</div>"


def recommendation_html(record: dict) -> str:
    rec = record.get("recommendation")
    if rec is None:
        return '<div class="bad"><p>No recommendation: the sweep needs weight 0 (the base) and another weight.</p></div>'
    choice = "the base model (weight 0)" if rec["checkpoint"] is None else f"{rec['checkpoint']} at weight {rec['weight']:g}"
    return (f'<div class="ok"><p><b>Recommended: {escape(choice)}</b></p><p>{escape(rec["reason"])}</p>'
            f'<p class="muted">Rule: {escape(rec["rule"])}.</p></div>')


def verdict_html(record: dict) -> str:
    from ufo_video.eval.trend_verdict import verdict

    if not record.get("trend"):
        return "<p>No trend: the sweep has one weight.</p>"
    v = verdict(record["trend"])
    rows = []
    for group, checks in v["groups"].items():
        for c in checks:
            rows.append([escape(group), escape(c["metric"]), "non-decreasing" if c["want"] == "up" else "non-increasing",
                         "yes" if c["holds"] else "<b>no</b>", _cell(c["first"]), _cell(c["last"])])  # fmt: skip
    steps = record["settings"]["num_inference_steps"]
    note = ""
    if steps < FEW_STEPS:
        note = (f'<p class="muted">These videos had only {steps} denoising steps: such a quick run is mostly noise, '
                "so it cannot show the trend either way; judge it on a run with the model's usual steps.</p>")
    return "\n".join([
        f'<div class="{"ok" if v["holds"] else "bad"}"><p>{escape(v["statement"])}</p></div>', note,
        _table(["videos", "metric", "expected as weight grows", "holds", "at min weight", "at max weight"], rows),
    ])  # fmt: skip


def render_sweep_html(record: dict) -> str:
    grid = escape(record["grid"])
    media = (f'<img class="px" src="{grid}" alt="grid">' if grid.endswith(".gif")
             else f'<video class="px" src="{grid}" autoplay loop muted playsinline controls style="min-width:50%"></video>'
             if grid.endswith(".mp4") else f"<p>grid frames: <code>{grid}/</code></p>")  # fmt: skip
    best = record.get("recommendation") or {}
    names = ["ssim", "psnr_db", "warp_error", "brightness_flicker", "flow_px", "dynamic_pairs", "is_dynamic"]
    rows = []
    for e in record["videos"]:
        mark = " &#9733;" if (e["checkpoint"], e["weight"]) == (best.get("checkpoint"), best.get("weight")) else ""
        rows.append([escape(e["checkpoint"]) + mark, f"{e['weight']:g}"] + [_cell(e["metrics"][n]) for n in names]
                    + [f'<a href="{escape(e["file"])}">video</a>'])  # fmt: skip
    s = record["settings"]
    body = [
        "<h1>ufo-video sweep</h1>",
        f"<p class=\"muted\">&ldquo;{escape(record['prompt'])}&rdquo;, seed {record['seed']}, "
        f"{s['sample_size'][0]}x{s['sample_size'][1]}, {s['video_length']} frames, {s['num_inference_steps']} steps; "
        f"model <code>{escape(str(s['model']))}</code>. Every number is in sweep.json.</p>",
        "<h2>Recommendation</h2>", recommendation_html(record),
        "<h2>Grid</h2><p class=\"muted\">One row per checkpoint; left to right the weight grows.</p>", media,
        "<h2>Consistency and motion against the weight</h2>", charts(record) if len(record["weights"]) > 1 else "",
        "<h2>Metrics</h2>", _table(["checkpoint", "weight"] + names + [""], rows),
        "<h2>Does the expected trend hold? (computed)</h2>", verdict_html(record),
    ]  # fmt: skip
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>ufo-video sweep</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


def write_sweep_html(record: dict, out_dir: Path) -> Path:
    return write_text_atomic(out_dir / "sweep.html", render_sweep_html(record))
