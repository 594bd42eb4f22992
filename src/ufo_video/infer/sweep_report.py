"""sweep.html: one self-contained page for a `ufo-video sweep` (like the demo's report).

Grid video, the recommendation and its rule, charts of consistency and motion against the weight
(one line per checkpoint), the metrics table and the trend verdict computed by
`eval.trend_verdict.verdict`, as in the demo's report (never assumed). Inline SVG and CSS only
(`charts`, `report_style`); the videos are referenced by relative paths so the page works when
the folder is moved.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from ufo_video.atomic import write_text_atomic
from ufo_video.charts import line_chart
from ufo_video.report_style import CSS

# below this many denoising steps the videos are mostly noise, and so is any trend measured on
# them (the demo's quick plan uses 2; its full plan's 12 already give clean tiny-base videos)
FEW_STEPS = 10
LEGEND_CHARS = 40  # what fits in the charts' legend (right-aligned, it may span the plot's width)
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
    """The legend names each checkpoint as the settings table and the grid do (its label); only a
    label longer than the legend has room for loses its start ("~" and its end, the checkpoint-N part)."""
    short = {}
    for label in labels:
        name = label if len(label) <= LEGEND_CHARS else "~" + label[-(LEGEND_CHARS - 1):]
        short[label] = name if name not in short.values() else f"{len(short) + 1}: {name}"
    return short


def _candidates(record: dict) -> dict:
    rec = record.get("recommendation") or {}
    return {(c["checkpoint"], c["weight"]): c for c in rec.get("candidates", [])}


def charts(record: dict) -> str:
    """SVG charts against the weight, one series per checkpoint: the mean paired change of each
    CHARTED metric against the base with its interval as error bars (0 at weight 0), and the
    share of motion kept with its interval (the rule's --keep-motion as a dashed line)."""
    weights = record["weights"]
    cands = _candidates(record)
    if not cands:
        return "<p>No charts: the sweep needs weight 0 (the base) and another weight.</p>"
    names = legend_names(record["checkpoints"])
    rec = record["recommendation"]
    out = []
    for metric, title in CHARTED:
        series, errors = {}, {}
        for c in record["checkpoints"]:
            vals, bars = [], []
            for w in weights:
                d = cands[(c, w)]["differences"].get(metric) if (c, w) in cands else None
                vals.append(0.0 if w == 0 else d["mean"] if d else float("nan"))
                bars.append((d["low"], d["high"]) if d and d["low"] is not None else None)
            series[names[c]], errors[names[c]] = vals, bars
        out.append(line_chart(series, weights, f"change vs base: {title}", "LoRA weight (evenly spaced)", metric,
                              categorical=True, errors=errors, reference=0.0))  # fmt: skip
    series, errors = {}, {}
    for c in record["checkpoints"]:
        kept = [cands[(c, w)]["motion_kept"] if (c, w) in cands else None for w in weights]
        series[names[c]] = [1.0 if w == 0 else k["ratio"] if k and k["ratio"] is not None else float("nan") for w, k in zip(weights, kept)]
        errors[names[c]] = [(k["low"], k["high"]) if k and k["low"] is not None else None for k in kept]
    out.append(line_chart(series, weights, f"share of motion kept ({rec['motion_metric']} / base)", "LoRA weight (evenly spaced)",
                          "share", categorical=True, errors=errors, reference=rec["keep_motion"]))  # fmt: skip
    level = f"{rec['simultaneous_level']:.2%}"
    return (f'<p class="muted">Bars: {level} intervals (t, paired over the {rec["pairs"]} (prompt, seed) pairs; together '
            f"{rec['level']:.0%} for all settings). Dashed: no change / the motion share the rule requires.</p>"
            '<div class="charts">' + "".join(out) + "</div>")  # fmt: skip


def _iv(i: dict | None, pct: bool = False) -> str:
    if i is None:
        return ""
    mean = i.get("mean", i.get("ratio"))
    if mean is None:
        return "n/a"
    f = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:+.4g}")
    return f(mean) + ("" if i["low"] is None else f" [{f(i['low'])}, {f(i['high'])}]")


def settings_table(record: dict) -> str:
    """One row per setting: the rule's numbers with their intervals and why it (does not) qualify."""
    rec = record["recommendation"]
    c, m = rec["consistency_metric"], rec["motion_metric"]
    rows = [[escape(base_label(record)), "0", str(rec["pairs"]), _cell(rec["base"]["consistency"]), "", "", "", ""]]
    for cand in rec["candidates"]:
        star = " &#9733;" if (cand["checkpoint"], cand["weight"]) == (rec["checkpoint"], rec["weight"]) else ""
        rows.append([escape(cand["checkpoint"]) + star, f"{cand['weight']:g}", str(cand["n"]), _cell(cand["consistency"]),
                     _iv(cand["gain"]), _iv(cand["motion_kept"], pct=True), _cell(cand["reliable"]), _cell(cand["keeps_motion"])])  # fmt: skip
    return _table(["setting", "weight", "pairs", f"mean {c}", f"gain in {c} vs base (interval)", f"{m} kept (interval)",
                   "gain sure and >= min effect", "motion surely kept"], rows)  # fmt: skip


BASE_LABEL = "base (no LoRA)"


def base_label(record: dict) -> str:
    """The base row's name: with a stack it is the stack alone (no UFO), not the bare model."""
    return "base: the stack, no UFO" if record.get("stack") else BASE_LABEL


def setup_lines(record: dict) -> list[str]:
    """What every row applies (plain text): the files of each row with their experts and scales
    where a row holds several (an expert pair), the flow shift where one was given, and the stack
    held fixed in every video."""
    lines = []
    by_file = {f["file"]: f.get("expert") for e in record.get("videos", []) for f in e.get("loras", [])}
    for row in record.get("rows", []):
        if len(row["loras"]) > 1 or any(x != 1 for x in row["scales"]):
            parts = [f"{Path(f).name}" + (f" -> {by_file[f]}" if by_file.get(f) else "") + (f" at {x:g} x weight" if x != 1 else "")
                     for f, x in zip(row["loras"], row["scales"])]  # fmt: skip
            lines.append(f"row {row['checkpoint']}: " + " + ".join(parts))
    shift = (record.get("settings") or {}).get("flow_shift")
    if shift is not None:
        lines.append(f"flow shift {shift:g} in every video, the base included (--flow-shift)")
    stack = record.get("stack") or []
    if stack:
        held = ", ".join(f"{Path(s['file']).name} x {s['weight']:g}" + (f" -> {s['expert']}" if s.get("expert") else "")
                         for s in stack)  # fmt: skip
        lines.append(f"stack in every video, the base included: {held}; every gain and motion kept is against "
                     "the same stack without UFO")  # fmt: skip
    return lines


def recommendation_html(record: dict) -> str:
    rec = record.get("recommendation")
    if rec is None:
        return '<div class="bad"><p>No recommendation: the sweep needs weight 0 (the base) and another weight.</p></div>'
    choice = "the base model (weight 0)" if rec["checkpoint"] is None else f"{rec['checkpoint']} at weight {rec['weight']:g}"
    box = "ok" if rec["checkpoint"] is not None else "bad"
    effect = "n/a" if rec["min_effect"] is None else f"{rec['min_effect']:.4g}"
    return (f'<div class="{box}"><p><b>Recommended: {escape(choice)}</b></p><p>{escape(rec["reason"])}</p>'
            f'<p class="muted">Rule: {escape(rec["rule"])}.</p>'
            f'<p class="muted">Minimum effect {effect}: {escape(rec["min_effect_source"])}. Method: {escape(rec["method"])}.</p></div>')  # fmt: skip


def verdict_html(record: dict) -> str:
    from ufo_video.eval.trend_verdict import verdict

    if not record.get("trend"):
        return "<p>No trend: the sweep has one weight.</p>"
    ti = record.get("trend_intervals")
    parts = []
    if ti:
        rows = []
        for group, g in ti["groups"].items():
            for c in g["checks"]:
                bad = ", ".join(f"{s['from']:g}->{s['to']:g}" for s in c["steps"] if s["direction"] == "wrong")
                rows.append([escape(group), escape(c["metric"]), "up" if c["want"] == "up" else "down", _iv(c["change"]),
                             escape(c["direction"]), escape(bad)])  # fmt: skip
        parts += [f'<div class="{"ok" if ti["verdict"] == "holds" else "bad"}"><p>{escape(ti["statement"])}</p></div>',
                  _table(["videos", "metric", "expected as weight grows", "change min -> max weight (95% interval)",
                          "judged", "steps surely the wrong way"], rows)]  # fmt: skip
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
    return "\n".join(parts + [
        '<p class="muted">Means alone (no intervals):</p>',
        f'<div class="{"ok" if v["holds"] else "bad"}"><p>{escape(v["statement"])}</p></div>', note,
        _table(["videos", "metric", "expected as weight grows", "holds", "at min weight", "at max weight"], rows),
    ])  # fmt: skip


def _prompts_line(record: dict) -> str:
    samples = record.get("samples") or []
    if len(samples) <= 1:
        return f"&ldquo;{escape(record['prompt'])}&rdquo;, seed {record['seed']}"
    prompts = list(dict.fromkeys(s["prompt"] for s in samples))
    seeds = sorted({s["seed"] for s in samples})
    listed = "; ".join(f"&ldquo;{escape(p)}&rdquo;" for p in prompts)
    return f"{len(prompts)} prompts x seeds {', '.join(map(str, seeds))} ({len(samples)} pairs): {listed}"


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
        rows.append([escape(e["checkpoint"]) + mark, f"{e['weight']:g}", escape(e.get("sample", ""))] + [_cell(e["metrics"][n]) for n in names]
                    + [f'<a href="{escape(e["file"])}">video</a>'])  # fmt: skip
    s = record["settings"]
    body = [
        "<h1>ufo-video sweep</h1>",
        (f"<p class=\"muted\">{_prompts_line(record)}, "
         f"{s['sample_size'][0]}x{s['sample_size'][1]}, {s['video_length']} frames, {s['num_inference_steps']} steps; "
         f"model <code>{escape(str(s['model']))}</code>. Every number is in sweep.json.</p>"),
        *(f'<p class="muted">{escape(line)}</p>' for line in setup_lines(record)),
        "<h2>Recommendation</h2>", recommendation_html(record),
        "<h2>Grid</h2><p class=\"muted\">One row per checkpoint; left to right the weight grows"
        + (f" (first (prompt, seed); the others: {', '.join(escape(g['file']) for g in record.get('grids', [])[1:])})" if len(record.get("grids", [])) > 1 else "")
        + ".</p>", media,
        "<h2>Consistency and motion against the weight</h2>", charts(record) if len(record["weights"]) > 1 else "",
        "<h2>Settings against the base</h2>", settings_table(record) if record.get("recommendation") else "",
        "<h2>Metrics of every video (as written; equal to <code>ufo-video eval</code> on the file)</h2>",
        _table(["checkpoint", "weight", "prompt, seed"] + names + [""], rows),
        "<h2>Does the expected trend hold? (computed)</h2>", verdict_html(record),
    ]  # fmt: skip
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>ufo-video sweep</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


def write_sweep_html(record: dict, out_dir: Path) -> Path:
    return write_text_atomic(out_dir / "sweep.html", render_sweep_html(record))
