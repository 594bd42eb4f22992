"""report.json (every number) and report.html (one self-contained page) for the demo.

The page uses no JavaScript, stylesheet or font from elsewhere: charts are inline SVG, the
labelled grids are embedded as GIF data URIs, and the individual videos are <video> tags with
relative paths into the output folder (so the page works when that folder is moved or zipped).
"""

from __future__ import annotations

import base64
import json
import math
import platform
import sys
from html import escape
from importlib import metadata
from pathlib import Path

from ufo_video.atomic import write_text_atomic
from ufo_video.charts import line_chart
from ufo_video.report_style import CSS

PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "av", "opencv-python-headless", "numpy",
            "pillow")  # fmt: skip
PLOTTED = (("ssim", "SSIM between frames (higher = consistent)"),
           ("warp_error", "warp error (lower = consistent)"),
           ("flow_px", "optical flow, px/frame (dynamics)"))  # fmt: skip
KIND = "ufo-video demo report"


def versions() -> dict[str, str]:
    from ufo_video import __version__

    found = {"ufo-video": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine_info() -> dict:
    """What the timings were measured on: cores, torch threads and the load average (other
    processes on the machine slow every step; the report should say so, not hide it)."""
    import os

    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else -1.0
    return {"cpu_count": os.cpu_count() or 0, "torch_threads": torch.get_num_threads(),
            "load_average_start": round(load, 2)}  # fmt: skip


def check_finite(value, where: str = "report") -> None:
    """Every number in the report must be finite (JSON has no NaN/inf; a NaN here is a bug)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{where}[{i}]")


def write_json(report: dict, out: Path) -> Path:
    check_finite(report)
    return write_text_atomic(out / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------- HTML pieces


def _table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
                   for r in rows)  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(x) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:.4g}" if isinstance(x, float) else escape(str(x))


def _gif_data_uri(path: Path) -> str:
    return "data:image/gif;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _videos_section(report: dict, out: Path, display: int) -> str:
    parts = ["<h2>Videos: the same prompt and seed at each UFO weight &alpha;</h2>",
             '<p class="muted">Each row: one prompt and seed; left to right the LoRA weight grows. Under each row '
             "the same videos as one labelled GIF can be opened (it plays without the mp4 files).</p>"]  # fmt: skip
    groups: dict[tuple[str, int], list[dict]] = {}
    for rec in report["videos"]:
        groups.setdefault((rec["mode"], rec["prompt_index"]), []).append(rec)
    for (mode, k), recs in groups.items():
        first = recs[0]
        parts.append(f"<h3>{mode}: &ldquo;{escape(first['prompt'])}&rdquo; (seed {first['seed']})</h3>")
        figs = []
        if first.get("start_image"):
            figs.append(f'<figure><img class="px" src="{escape(first["start_image"])}" width="{display}" '
                        f'height="{display}" alt="start image"><figcaption>start image</figcaption></figure>')  # fmt: skip
        for rec in recs:
            figs.append(f'<figure><video src="{escape(rec["file"])}" width="{display}" height="{display}" autoplay loop '
                        f'muted playsinline controls></video><figcaption>&alpha; = {rec["weight"]:g}</figcaption></figure>')  # fmt: skip
        parts.append('<div class="videos">' + "".join(figs) + "</div>")
        grid = out / Path(first["file"]).parent / "grid.gif"
        if grid.is_file():
            from PIL import Image

            with Image.open(grid) as img:
                width = 2 * img.width
            parts.append(f'<details><summary>the same row as one labelled GIF</summary><p><img class="px" '
                         f'src="{_gif_data_uri(grid)}" alt="labelled grid {mode} prompt {k}" '
                         f'style="width:{width}px;max-width:100%"></p></details>')  # fmt: skip
    return "\n".join(parts)


def _charts_section(report: dict) -> str:
    trends = report["trend"]
    weights = trends["all"]["weights"]
    charts = []
    for metric, title in PLOTTED:
        series = {name: t["metrics"][metric]["values"] for name, t in trends.items() if metric in t["metrics"]}
        charts.append(line_chart(series, weights, title, "UFO weight α (evenly spaced)", metric, categorical=True))
    return "<h2>Consistency and dynamics against &alpha;</h2>\n" + '<div class="charts">' + "".join(charts) + "</div>"


def _metrics_section(report: dict) -> str:
    trend = report["trend"]["all"]
    names = list(trend["metrics"])
    rows = [[f"{w:g}"] + [_num(trend["metrics"][n]["values"][i]) for n in names] for i, w in enumerate(trend["weights"])]
    rows.append(["direction"] + [escape(trend["metrics"][n]["direction"]) for n in names])
    rows.append(["better"] + [escape(str(trend["metrics"][n]["better"])) for n in names])
    html = ["<h2>Metrics by &alpha; (mean over all videos)</h2>", _table(["α"] + names, rows)]
    per_video = [[escape(r["mode"]), str(r["prompt_index"]), f"{r['weight']:g}"] + [_num(r["metrics"][n]) for n in names]
                 + [f"{r['seconds']:.2f}"] for r in report["videos"]]  # fmt: skip
    html += ["<details><summary>every video</summary>",
             _table(["mode", "prompt", "α"] + names + ["gen s"], per_video, left=2), "</details>"]  # fmt: skip
    return "\n".join(html)


def _verdict_section(report: dict) -> str:
    v = report["verdict"]
    cls = "note" if not v.get("judged", True) else "ok" if v["holds"] else "bad"
    rows = []
    for group, checks in v["groups"].items():
        for c in checks:
            wrong = ", ".join(f"{x['from']:g}&rarr;{x['to']:g} ({x['step']:+.3g})" for x in c["violations"]) or "&ndash;"
            rows.append([escape(group), escape(c["metric"]), escape(c["kind"]),
                         "non-decreasing" if c["want"] == "up" else "non-increasing",
                         "yes" if c["holds"] else "<b>no</b>", _num(c["first"]), _num(c["last"]), wrong])  # fmt: skip
    return "\n".join([
        "<h2>Does the expected trend hold? (computed)</h2>",
        f'<div class="{cls}"><p>{escape(v["statement"])}</p><p>{escape(report["motion_note"])}</p></div>',
        _table(["videos", "metric", "kind", "expected", "holds", "at min α", "at max α", "wrong-way steps"], rows, left=4),
    ])  # fmt: skip


def _sweep_section(report: dict) -> str:
    """The chooser's answer over the run's checkpoints and several seeds (the full page: sweep/sweep.html)."""
    sw = report.get("sweep")
    if not sw:
        return ""
    rec = sw["recommendation"] or {}
    choice = ("none: " if rec.get("checkpoint") is None else "") + rec.get("reason", "no recommendation")
    cls = "ok" if rec.get("checkpoint") is not None else "note"
    return "\n".join([
        "<h2>Which checkpoint, which weight? (the chooser)</h2>",
        (f"<p>The checkpoints {escape(', '.join(sw['checkpoints']))} at &alpha; {', '.join(f'{w:g}' for w in sw['weights'])} on "
         f"{sw['samples']} (prompt, seed) pairs, each paired with the base (<code>ufo-video sweep</code>'s code; the whole page: "
         f'<a href="{escape(sw["html"])}">{escape(sw["html"])}</a>).</p>'),
        f'<div class="{cls}"><p><b>Recommended:</b> {escape(choice)}</p></div>',
        f"<pre>{escape(sw['table'])}</pre>",
    ])  # fmt: skip


def _training_section(report: dict) -> str:
    t, plan = report["training"], report["plan"]
    steps = [s for s, _ in t["losses"]]
    losses = [float(v) for _, v in t["losses"]]
    chart = line_chart({"loss": losses}, steps, "training loss (flow matching)", "step", "loss", markers=len(steps) <= 30,
                       floor=0.0)
    rows = [["steps", str(t["steps"])], ["final loss", _num(t["final_loss"])], ["seconds", f"{t['seconds']:.1f}"],
            ["clips", f"static, {plan['train_frames']} frames of {plan['train_size']}x{plan['train_size']}, batch {plan['batch_size']}"],
            ["LoRA", f"rank {plan['rank']}, alpha {plan['rank']}, lr {plan['learning_rate']:g}, train_mode inpaint"],
            ["file", escape(t["lora"])]]  # fmt: skip
    if t.get("cache"):
        rows.insert(3, ["latent cache", f"{t['cache']['seconds']:.1f} s to build (included in the step time)"
                        f"<pre>{escape(t['cache']['summary'])}</pre>"])  # fmt: skip
    return "<h2>Training: a UFO LoRA on static clips</h2>\n" + chart + _table(["", ""], rows)


def _dataset_section(report: dict) -> str:
    d = report["dataset"]
    excluded = "".join(f"<li><code>{escape(e['file_path'])}</code></li>" for e in d["check"]["excluded"]) or "<li>none</li>"
    return "\n".join([
        "<h2>Dataset and data check</h2>",
        f"<p>{d['images']} images and {d['videos']} videos (synthetic, with captions) plus one deliberately broken "
        f"file in <code>{escape(d['root'])}</code>. <code>ufo-video data check</code> (its API) reported:</p>",
        f"<pre>{escape(d['check']['summary'])}</pre>",
        "<p>Entries the check flagged were <b>excluded</b> from the training metadata "
        f"(<code>{escape(d['check']['train_metadata'])}</code>), not left for the trainer to skip:</p><ul>{excluded}</ul>",
    ])  # fmt: skip


def _run_section(report: dict) -> str:
    timing_rows = [[escape(k), f"{v:.1f}"] for k, v in report["timings"].items()]
    timing_rows.append(["<b>total</b>", f"<b>{report['total_seconds']:.1f}</b>"])
    version_rows = [[escape(k), escape(v)] for k, v in report["versions"].items()]
    m = report.get("machine", {})
    machine = (f"<p class=\"muted\">Timed on {m.get('cpu_count', '?')} CPU core(s), {m.get('torch_threads', '?')} torch "
               f"thread(s); 1-minute load average {m.get('load_average_start', '?')} at the start and "
               f"{m.get('load_average_end', '?')} at the end (a load above the core count means other processes "
               "shared the CPU and every time above is longer than on an idle machine).</p>")  # fmt: skip
    base = report["base_model"]
    return "\n".join([
        "<h2>Run</h2>",
        f"<p>Base model: <code>{escape(base['path'])}</code> ({escape(base['variant'])}, {escape(base['layout'])} layout"
        f"{', RANDOM weights' if base['random'] else ', trained'}). Plan: <b>{escape(report['plan']['name'])}</b>.</p>",
        machine, '<div class="charts">', _table(["step", "seconds"], timing_rows), _table(["package", "version"], version_rows), "</div>",
        f"<details><summary>plan</summary><pre>{escape(json.dumps(report['plan'], indent=1))}</pre></details>",
    ])  # fmt: skip


def render_html(report: dict, out: Path) -> str:
    banner = report["base_model"]["banner"]
    # wide enough for the browser's video controls (play, time, volume need about 240 px)
    display = max(240, report["plan"]["gen_size"] * 2)
    body = [
        "<h1>ufo-video demo: UFO in miniature</h1>",
        f'<p class="muted">ufo-video {escape(report["versions"]["ufo-video"])}, plan {escape(report["plan"]["name"])}, '
        f"{report['total_seconds']:.0f} s in total. All numbers are in report.json.</p>",
        f'<div class="banner">{escape(banner)}</div>' if banner else "",
        _verdict_section(report),
        _sweep_section(report),
        _videos_section(report, out, display),
        _charts_section(report),
        _metrics_section(report),
        _training_section(report),
        _dataset_section(report),
        _run_section(report),
    ]  # fmt: skip
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>ufo-video demo report</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


def write_html(report: dict, out: Path) -> Path:
    return write_text_atomic(out / "report.html", render_html(report, out))
