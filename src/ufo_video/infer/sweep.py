"""`ufo-video sweep`: LoRA checkpoints x weights over (prompt, seed) pairs, measured and ranked.

Answers "what does my UFO do, which checkpoint is best, and at which alpha?". Every LoRA file is
attached once, unfused, to one loaded model; a video at (row k, weight w) runs row k's files at w
(times their expert's scale) and every other swept file at 0 (an adapter at weight 0 is switched
off exactly, so the output is the one the row's files alone would give). A row is one file, or on
a multi-expert model one file per expert (`sweep_pairs`); a stack (`--base-lora`) is held at its
weights in every video. Weight 0 is the base (the stack alone, if any) for every row, so it is
generated once per (prompt, seed). Every setting is rendered on the same (prompt, seed) samples
as the base, so `ufo_video.eval.choose` can judge it by paired differences with intervals (one
prompt at one seed recommends noise). Each video gets its file and sidecar and the eval metrics
of the file as written (`score_written`: equal to `ufo-video eval` on it); the sweep writes a
labelled grid per sample (checkpoints down, weights across), `sweep.json` (every number, the
trend over the weight with intervals and the recommendation) and `sweep.html`.

Layout: with one LoRA, `alpha_W.mp4` in the output folder; with several, one sub-folder per
checkpoint (`checkpoint-200/alpha_W.mp4`); with several samples, one sub-folder per sample below
that (`checkpoint-200/p2-seed3/alpha_W.mp4`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ufo_video.atomic import write_json_atomic
from ufo_video.errors import UfoError
from ufo_video.infer.outputs import write_output, write_video_and_sidecar
from ufo_video.infer.run import Log
from ufo_video.infer.settings import GenerationSettings, LoraSpec, VideoRequest
from ufo_video.writable import refuse_existing

LABEL_HEIGHT = 14
GAP = 2
CHAR_PX = 6  # width of a character of Pillow's default font
NAME_CHARS = 18  # checkpoint names are cut to this many characters in the grid
_STEP = re.compile(r"checkpoint-(\d+)\.safetensors$")

# (videos done, videos in all, what is being made): for progress bars (CLI and web UI)
OnVideo = Callable[[int, int, str], None]


def parse_weights(text: str) -> list[float]:
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise UfoError(f"--weights {text!r}: give numbers separated by commas, e.g. 0,0.05,0.1,0.2") from None
    if not weights:
        raise UfoError("--weights is empty; give numbers separated by commas, e.g. 0,0.05,0.1,0.2")
    if any(not np.isfinite(w) or w < 0 for w in weights):
        raise UfoError(f"--weights {text!r}: weights must be finite numbers >= 0")
    if len(set(weights)) != len(weights):
        raise UfoError(f"--weights {text!r} repeats a weight")
    return weights


def weight_name(weight: float) -> str:
    return f"alpha_{float(weight)}"


def expand_lora_paths(items: Sequence[str | Path]) -> list[Path]:
    """LoRA files as given; a folder stands for its `checkpoint-N.safetensors` files (a training
    run's output_dir), in step order. Missing files and empty folders are errors naming them."""
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            ckpts = sorted((f for f in p.iterdir() if _STEP.match(f.name)), key=lambda f: int(_STEP.match(f.name)[1]))
            if not ckpts:
                raise UfoError(f"--lora {p}: the folder has no checkpoint-N.safetensors files (is it a training output_dir?)")
            found += ckpts
        elif p.is_file():
            found.append(p)
        else:
            raise UfoError(f"LoRA file not found: {p}")
    resolved = [f.resolve() for f in found]
    if len(set(resolved)) != len(resolved):
        raise UfoError("the same LoRA file is given twice: " + ", ".join(sorted({str(f) for f in found if resolved.count(f.resolve()) > 1})))
    return found


def checkpoint_labels(paths: Sequence[Path]) -> list[str]:
    """Short unique names: the file stem, or parent/stem where two stems clash."""
    stems = [p.stem for p in paths]
    labels = [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
    if len(set(labels)) != len(labels):
        labels = [f"{i + 1}-{label}" for i, label in enumerate(labels)]
    return labels


def label_grid(columns: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Videos [F, H, W, 3] side by side, each under a band with its label (Pillow's default font)."""
    frames, height, width = columns[0].shape[:3]
    total_w = len(columns) * width + (len(columns) - 1) * GAP
    band = _band(total_w, [(i * (width + GAP) + 2, text) for i, text in enumerate(labels)])
    grid = np.zeros((frames, LABEL_HEIGHT + height, total_w, 3), dtype=np.uint8)
    grid[:, :LABEL_HEIGHT] = band[None]
    for i, col in enumerate(columns):
        x = i * (width + GAP)
        grid[:, LABEL_HEIGHT:, x : x + width] = col
    return grid


def _band(width: int, texts: list[tuple[int, str]], height: int = LABEL_HEIGHT) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    band = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default()
    for x, text in texts:
        draw.text((x, 1), text, fill=(255, 255, 255), font=font)
    return np.asarray(band)


def _fit(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(1, chars - 1)] + "~"


def sweep_grid(rows: list[list[np.ndarray]], weights: list[float], row_labels: list[str]) -> np.ndarray:
    """Checkpoints down, weights across: a header band of weights over the videos and a column of
    checkpoint names on their left. The top-left corner stays empty, so a player's caption
    drawn over it (the web UI's video label) hides no name; long names are cut with "~"."""
    frames, height, width = rows[0][0].shape[:3]
    names = [_fit(label, NAME_CHARS) for label in row_labels]
    name_w = CHAR_PX * max(len(n) for n in names) + 6
    cols = len(weights)
    total_w = name_w + cols * width + (cols - 1) * GAP
    total_h = LABEL_HEIGHT + len(rows) * height + (len(rows) - 1) * GAP
    header = [(name_w + i * (width + GAP) + 2, _fit(f"a={w:g}", max(2, (width - 2) // CHAR_PX))) for i, w in enumerate(weights)]
    grid = np.zeros((frames, total_h, total_w, 3), dtype=np.uint8)
    grid[:, :LABEL_HEIGHT] = _band(total_w, header)[None]
    for r, (name, columns) in enumerate(zip(names, rows)):
        y = LABEL_HEIGHT + r * (height + GAP)
        grid[:, y : y + LABEL_HEIGHT, :name_w] = _band(name_w, [(2, name)])[None]
        for i, col in enumerate(columns):
            x = name_w + i * (width + GAP)
            grid[:, y : y + height, x : x + width] = col
    return grid


def _video_path(folder: Path, name: str, fmt: str) -> Path:
    return folder / (name if fmt == "png" else f"{name}.{fmt}")


def _folder(out_dir: Path, labels: list[str], label: str, sample: str = "") -> Path:
    folder = out_dir if len(labels) == 1 else out_dir / label.replace("/", "_")
    return folder / sample if sample else folder


def grid_name(sample: str) -> str:
    return f"grid-{sample}" if sample else "grid"


def planned_files(out_dir: Path, labels: list[str], weights: list[float], fmt: str, samples: Sequence[str] = ("",)) -> list[Path]:
    """Every file a sweep writes (videos, their sidecars, the grids, sweep.json, sweep.html)."""
    from ufo_video.infer.outputs import sidecar_path

    videos = [_video_path(_folder(out_dir, labels, label, s), weight_name(w), fmt) for s in samples for label in labels for w in weights]
    files = [f for v in videos for f in (v, sidecar_path(v))]
    return files + [_video_path(out_dir, grid_name(s), fmt) for s in samples] + [out_dir / "sweep.json", out_dir / "sweep.html"]


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Before any work: the folder is writable and holds no earlier sweep (unless overwrite)."""
    if (out_dir / "sweep.json").exists() and not overwrite:
        raise UfoError(f"{out_dir} already holds a sweep (sweep.json); choose another --out-dir or pass --overwrite")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".ufo-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UfoError(f"output folder {out_dir} cannot be written ({exc.strerror or exc}); choose another --out-dir") from None


def score_written(path: Path, fmt: str, fps: int) -> dict:
    """The metrics of the file as written, decoded the way `ufo-video eval` decodes it (H.264 and
    GIF are lossy: scoring the frames in memory gave other numbers than `eval` on the file)."""
    from ufo_video.eval.metrics import evaluate_frames

    if fmt == "png":  # lossless; `eval` reads no frame folders, so the sweep's fps is the one known
        from PIL import Image

        frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(path.glob("*.png"))])
        return evaluate_frames(frames, fps=fps)
    from ufo_video.eval.video_io import read_video

    frames, file_fps = read_video(path)
    return evaluate_frames(frames, fps=file_fps)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Counts videos, estimates the time left from the ones done (the first one gives the estimate
    up front), and tells `log` and `on_video`."""

    def __init__(self, total: int, log: Log, on_video: OnVideo | None) -> None:
        import time

        self.total, self.done, self.log, self.on_video = total, 0, log, on_video
        self.clock = time.monotonic
        self.start = self.clock()

    def before(self, what: str) -> None:
        if self.on_video:
            self.on_video(self.done, self.total, what)

    def after(self, what: str) -> None:
        self.done += 1
        elapsed = self.clock() - self.start
        left = elapsed / self.done * (self.total - self.done)
        if self.done == 1 and self.total > 1:
            self.log(f"the first video took {_duration(elapsed)}; the sweep's {self.total} videos will take about "
                     f"{_duration(elapsed * self.total)} in all")  # fmt: skip
        self.log(f"[{self.done}/{self.total}] {what} ({_duration(elapsed)} so far, about {_duration(left)} left)")


def _as_samples(request) -> list:
    from ufo_video.infer.sweep_prompts import Sample

    if isinstance(request, VideoRequest):
        return [Sample("", request, 0)]
    samples = list(request)
    if not samples:
        raise UfoError("the sweep has no prompts")
    if len(samples) == 1:
        samples = [replace(samples[0], name="")]
    return samples


def run_sweep(
    settings: GenerationSettings,
    request,
    loras: LoraSpec | Sequence[LoraSpec],
    weights: list[float],
    out_dir: Path,
    fmt: str,
    log: Log = print,
    rule=None,
    generator=None,
    on_video: OnVideo | None = None,
    overwrite: bool = False,
    rows=None,
    scales: Sequence[float] | None = None,
    stack: Sequence[LoraSpec] = (),
) -> Path:
    """Write every (prompt, seed) x (checkpoint, weight) video, the grids, sweep.json and
    sweep.html; returns sweep.json.

    `request`: one `VideoRequest`, or the `sweep_prompts.Sample`s (prompt x seed) to render; the
    base (weight 0) is rendered once per sample and every setting on the same samples, so their
    metrics pair up. Each video is scored as written (`score_written`). `generator`: an already
    loaded `VideoGenerator` holding exactly these LoRAs, in this order, unfused (the web UI keeps
    one); otherwise the model is loaded here. `rule`: an `ufo_video.eval.choose.ChoiceRule`
    (default rule when None). An earlier sweep in `out_dir` is replaced only with `overwrite`.

    `rows`: the `sweep_pairs.Row`s (which of `loras` each row applies together: a pair on a
    two-expert model); None = each file alone. `scales`: per file of `loras`, the factor on the
    row's weight (per-expert weights; 1 when None). `stack`: LoRAs held at their weights in every
    video, the base included (a passed `generator` then holds `loras` followed by `stack`)."""
    import torch

    from ufo_video.eval.choose import ChoiceRule, recommend

    specs = [loras] if isinstance(loras, LoraSpec) else list(loras)
    if not specs:
        raise UfoError("give at least one LoRA file (--lora)")
    if settings.fuse:
        raise UfoError("sweep changes the LoRA weight between videos, which a fused LoRA cannot do; drop --fuse")
    samples = _as_samples(request)
    if any(not s.request.prompt.strip() for s in samples):
        raise UfoError("the prompt is empty; give --prompt TEXT or --prompts FILE")
    rule = rule or ChoiceRule()
    check_out_dir(out_dir, overwrite)
    from ufo_video.infer.sweep_pairs import Row

    if rows is None:
        rows = [Row(label, (i,)) for i, label in enumerate(checkpoint_labels([Path(s.path) for s in specs]))]
    scales = [1.0] * len(specs) if scales is None else [float(x) for x in scales]
    stack = list(stack)
    labels = [r.label for r in rows]
    if not overwrite:  # files of a sweep that stopped early are outputs too (each is also placed exclusively)
        refuse_existing(planned_files(out_dir, labels, weights, fmt, [s.name for s in samples]))
    if generator is None:
        from ufo_video.infer.engine import VideoGenerator

        generator = VideoGenerator(replace(settings, loras=(*(replace(s, weight=0.0) for s in specs), *stack)), log=log)
    per_sample = 1 + len(rows) * sum(1 for w in weights if w != 0) if 0.0 in weights else len(rows) * len(weights)
    progress = Progress(per_sample * len(samples), log, on_video)
    where = f" -- {len(samples)} (prompt, seed) pairs" if len(samples) > 1 else ""
    log(f"sweep: {progress.total} videos ({len(rows)} checkpoint(s) x {len(weights)} weight(s){where})")
    if stack:
        log("stack held in every video, the base included: " + ", ".join(f"{Path(s.path).name} x {s.weight:g}" for s in stack))

    def vector(k: int, weight: float) -> list[float]:
        ufo = [weight * scales[i] if i in rows[k].files else 0.0 for i in range(len(specs))]
        return ufo + [s.weight for s in stack]

    def routing(vec: list[float]) -> list[dict]:
        return [dict(r, weight=w) for r, w in zip(getattr(generator, "lora_routing", list)(), vec)]
    entries, grids = [], []
    for sample in samples:
        tag = f"{sample.name}: " if sample.name else ""
        base = None
        grid_rows = []
        for k, (row, label) in enumerate(zip(rows, labels)):
            folder = _folder(out_dir, labels, label, sample.name)
            columns = []
            for weight in weights:
                name = weight_name(weight)
                out = _video_path(folder, name, fmt)
                if weight == 0 and base is not None:
                    frames = base
                else:
                    what = tag + ("base model (weight 0)" if weight == 0 else f"{label} at weight {weight:g}")
                    progress.before(what)
                    generator.set_lora_weights(vector(k, weight))
                    frames = generator.generate(sample.request)
                    progress.after(what)
                    if weight == 0:
                        base = frames
                vec = vector(k, weight)
                used = [replace(specs[i], weight=vec[i]) for i in row.files]
                run_settings = replace(settings, loras=(*used, *stack))  # the video's own LoRAs (others were at 0: off)
                runtime = {"threads": torch.get_num_threads()}  # in each sidecar, as `generate` records it
                route = routing(vec)
                out, side = write_video_and_sidecar(frames, out, fmt, run_settings, sample.request, runtime,
                                                    exclusive=not overwrite,
                                                    routing=[route[i] for i in (*row.files, *range(len(specs), len(vec)))]
                                                    if route else None)  # fmt: skip
                experts = {r["file"]: r["expert"] for r in route}
                files = [{"file": str(Path(u.path).resolve()), "weight": u.weight,
                          "expert": experts.get(str(Path(u.path).resolve()))} for u in used]  # fmt: skip
                entries.append({"checkpoint": label, "lora": files[0]["file"], "loras": files, "weight": weight,
                                "sample": sample.name, "prompt": sample.request.prompt, "seed": sample.request.seed,
                                "file": str(out.relative_to(out_dir)), "sidecar": str(side.relative_to(out_dir)),
                                "metrics": score_written(out, fmt, settings.fps)})  # fmt: skip
                columns.append(frames)
            grid_rows.append(columns)
        grid_path = _video_path(out_dir, grid_name(sample.name), fmt)
        write_output(sweep_grid(grid_rows, weights, labels), grid_path, fmt, settings.fps, exclusive=not overwrite)
        grids.append({"sample": sample.name, "file": grid_path.name})
    log(f"wrote {len(grids)} grid(s) (rows: {', '.join(labels)}; weights left to right: {', '.join(f'{w:g}' for w in weights)})")
    if on_video:
        on_video(progress.done, progress.total, "report")
    first = samples[0].request
    record = {
        "kind": "ufo-video sweep",
        "lora": entries[0]["lora"],
        "loras": [str(Path(s.path).resolve()) for s in specs],
        "checkpoints": labels,
        "rows": [{"checkpoint": r.label, "loras": [str(Path(specs[i].path).resolve()) for i in r.files],
                  "scales": [scales[i] for i in r.files]} for r in rows],
        "stack": [_stack_entry(s) for s in stack],
        "weights": weights,
        "prompt": first.prompt,
        "negative_prompt": first.negative_prompt,
        "seed": first.seed,
        "image": first.image,
        "samples": [s.to_dict() for s in samples],
        "settings": settings.to_dict() | {"loras": []},
        "scored": "each video's metrics are those of its written file, decoded as `ufo-video eval` decodes it",
        "videos": entries,
        "grid": grids[0]["file"],
        "grids": grids,
        "trend": sweep_trends(entries) if len(weights) > 1 else None,
        "trend_intervals": _trend_intervals(entries) if len(weights) > 1 else None,
        "recommendation": recommend(entries, rule) if 0.0 in weights and len(weights) > 1 else None,
    }
    path = write_json_atomic(out_dir / "sweep.json", record, allow_nan=False, exclusive=not overwrite)
    from ufo_video.infer.sweep_report import write_sweep_html

    log(f"wrote {path} and {write_sweep_html(record, out_dir)}")
    return path


def _stack_entry(spec: LoraSpec) -> dict:
    entry = {"file": str(Path(spec.path).resolve()), "weight": spec.weight}
    return entry | ({"expert": spec.expert} if spec.expert else {})


def _trend_intervals(entries: list[dict]) -> dict:
    from ufo_video.eval.trend_verdict import interval_verdict

    return interval_verdict(entries)


def sweep_trends(entries: list[dict]) -> dict:
    """`eval.summary.trend` over the weight: all checkpoints together ("all") and each alone."""
    from ufo_video.eval.summary import trend

    trends = {"all": trend([(e["weight"], e["metrics"]) for e in entries])}
    for label in dict.fromkeys(e["checkpoint"] for e in entries):
        trends[label] = trend([(e["weight"], e["metrics"]) for e in entries if e["checkpoint"] == label])
    return trends


def _iv(i: dict | None, fmt: str = "{:+.4g}") -> str:
    if i is None:
        return "-"
    mean = i.get("mean", i.get("ratio"))
    if mean is None:
        return "n/a"
    if i["low"] is None:
        return fmt.format(mean)
    return f"{fmt.format(mean)} [{fmt.format(i['low'])}, {fmt.format(i['high'])}]"


def format_sweep_table(record: dict) -> str:
    """Plain table: one row per setting (mean over the pairs, change against the base with its
    interval, motion kept with its interval), the rule, the recommendation or why none."""
    rec = record.get("recommendation")
    if rec is None:
        return "recommendation: needs weight 0 (the base) and at least one other weight in --weights"
    best = (rec["checkpoint"], rec["weight"])
    c, m = rec["consistency_metric"], rec["motion_metric"]
    header = ["checkpoint", "weight", "pairs", c, f"gain in {c} vs base", f"{m} kept", "reliable", "keeps", ""]
    from ufo_video.infer.sweep_report import base_label, setup_lines

    lines = [[base_label(record), "0", str(rec["pairs"]), f"{rec['base']['consistency']:.4g}", "", "", "", "", ""]]
    for cand in rec["candidates"]:
        mark = "<- recommended" if best == (cand["checkpoint"], cand["weight"]) else ""
        lines.append([cand["checkpoint"], f"{cand['weight']:g}", str(cand["n"]), f"{cand['consistency']:.4g}",
                      _iv(cand["gain"]), _iv(cand["motion_kept"], "{:.0%}"), "yes" if cand["reliable"] else "no",
                      "yes" if cand["keeps_motion"] else "no", mark])  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(header)]
    out = ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *lines]]
    out.append(f"intervals: {rec['simultaneous_level']:.2%} each ({rec['level']:.0%} for all settings together); "
               f"minimum effect {rec['min_effect'] if rec['min_effect'] is None else format(rec['min_effect'], '.4g')} "
               f"({rec['min_effect_source']})")  # fmt: skip
    out += setup_lines(record)
    out.append(f"rule: {rec['rule']}")
    choice = "the base model (weight 0)" if rec["checkpoint"] is None else f"{rec['checkpoint']} at weight {rec['weight']:g}"
    out.append(f"recommended: {choice} -- {rec['reason']}")
    ti = record.get("trend_intervals")
    if ti:
        out.append(f"trend: {ti['statement']}")
    return "\n".join(out)
