"""`ufo-video sweep`: LoRA checkpoints x weights, same prompt and seed, measured and ranked.

Answers "what does my UFO do, which checkpoint is best, and at which alpha?". Every LoRA file is
attached once, unfused, to one loaded model; a video at (checkpoint k, weight w) runs with LoRA k
at w and every other LoRA at 0 (an adapter at weight 0 is switched off exactly, so the output is
the one the file alone would give). Weight 0 is the base model for every checkpoint, so it is
generated once. Each video gets its file and sidecar and the eval metrics of its frames; the sweep
writes a labelled grid (one row per checkpoint), `sweep.json` (every number, the trend over the
weight and the recommendation of `ufo_video.eval.choose`) and `sweep.html`.

Layout: with one LoRA, `alpha_W.mp4` in the output folder; with several, one sub-folder per
checkpoint (`checkpoint-200/alpha_W.mp4`).
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


def _band(width: int, texts: list[tuple[int, str]]) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    band = Image.new("RGB", (width, LABEL_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default()
    for x, text in texts:
        draw.text((x, 1), text, fill=(255, 255, 255), font=font)
    return np.asarray(band)


def sweep_grid(rows: list[list[np.ndarray]], weights: list[float], row_labels: list[str]) -> np.ndarray:
    """One labelled row per checkpoint (its name in a band above the row when there are several)."""
    parts = []
    for label, columns in zip(row_labels, rows):
        row = label_grid(columns, [f"a={w:g}" for w in weights])
        if len(rows) > 1:
            parts.append(np.broadcast_to(_band(row.shape[2], [(2, label)])[None], (row.shape[0], LABEL_HEIGHT, row.shape[2], 3)))
        parts.append(row)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def _video_path(folder: Path, name: str, fmt: str) -> Path:
    return folder / (name if fmt == "png" else f"{name}.{fmt}")


def _folder(out_dir: Path, labels: list[str], label: str) -> Path:
    return out_dir if len(labels) == 1 else out_dir / label.replace("/", "_")


def planned_files(out_dir: Path, labels: list[str], weights: list[float], fmt: str) -> list[Path]:
    """Every file a sweep writes (videos, their sidecars, the grid, sweep.json, sweep.html)."""
    from ufo_video.infer.outputs import sidecar_path

    videos = [_video_path(_folder(out_dir, labels, label), weight_name(w), fmt) for label in labels for w in weights]
    files = [f for v in videos for f in (v, sidecar_path(v))]
    return files + [_video_path(out_dir, "grid", fmt), out_dir / "sweep.json", out_dir / "sweep.html"]


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


def run_sweep(
    settings: GenerationSettings,
    request: VideoRequest,
    loras: LoraSpec | Sequence[LoraSpec],
    weights: list[float],
    out_dir: Path,
    fmt: str,
    log: Log = print,
    rule=None,
    generator=None,
    on_video: OnVideo | None = None,
    overwrite: bool = False,
) -> Path:
    """Write every (checkpoint, weight) video, the grid, sweep.json and sweep.html; returns sweep.json.

    `generator`: an already loaded `VideoGenerator` holding exactly these LoRAs, in this order,
    unfused (the web UI keeps one); otherwise the model is loaded here. `rule`: an
    `ufo_video.eval.choose.ChoiceRule` (default rule when None). An earlier sweep in `out_dir` is
    replaced only with `overwrite`."""
    import torch

    from ufo_video.eval.choose import ChoiceRule, recommend
    from ufo_video.eval.metrics import evaluate_frames

    specs = [loras] if isinstance(loras, LoraSpec) else list(loras)
    if not specs:
        raise UfoError("give at least one LoRA file (--lora)")
    if settings.fuse:
        raise UfoError("sweep changes the LoRA weight between videos, which a fused LoRA cannot do; drop --fuse")
    if not request.prompt.strip():
        raise UfoError("the prompt is empty; give --prompt TEXT")
    rule = rule or ChoiceRule()
    check_out_dir(out_dir, overwrite)
    labels = checkpoint_labels([Path(s.path) for s in specs])
    if not overwrite:  # files of a sweep that stopped early are outputs too (each is also placed exclusively)
        refuse_existing(planned_files(out_dir, labels, weights, fmt))
    if generator is None:
        from ufo_video.infer.engine import VideoGenerator

        generator = VideoGenerator(replace(settings, loras=tuple(replace(s, weight=0.0) for s in specs)), log=log)
    total = 1 + len(specs) * sum(1 for w in weights if w != 0) if 0.0 in weights else len(specs) * len(weights)
    done, base_frames, entries, rows = 0, None, [], []
    for k, (spec, label) in enumerate(zip(specs, labels)):
        folder = _folder(out_dir, labels, label)
        columns = []
        for weight in weights:
            if weight == 0 and base_frames is not None:
                frames, metrics = base_frames
            else:
                if on_video:
                    on_video(done, total, "base model (weight 0)" if weight == 0 else f"{label} at weight {weight:g}")
                generator.set_lora_weights([weight if i == k else 0.0 for i in range(len(specs))])
                frames = generator.generate(request)
                metrics = evaluate_frames(frames, fps=settings.fps)
                done += 1
                if weight == 0:
                    base_frames = (frames, metrics)
            run_settings = replace(settings, loras=(replace(spec, weight=weight),))
            name = weight_name(weight)
            runtime = {"threads": torch.get_num_threads()}  # in each sidecar, as `generate` records it
            out, side = write_video_and_sidecar(frames, _video_path(folder, name, fmt), fmt,
                                                run_settings, request, runtime, exclusive=not overwrite)
            log(f"{label} weight {weight:g}: wrote {out}")
            entries.append({"checkpoint": label, "lora": str(Path(spec.path).resolve()), "weight": weight,
                            "file": str(out.relative_to(out_dir)), "sidecar": str(side.relative_to(out_dir)),
                            "metrics": metrics})  # fmt: skip
            columns.append(frames)
        rows.append(columns)
    if on_video:
        on_video(done, total, "grid and report")
    grid_path = _video_path(out_dir, "grid", fmt)
    write_output(sweep_grid(rows, weights, labels), grid_path, fmt, settings.fps, exclusive=not overwrite)
    log(f"wrote {grid_path} (rows: {', '.join(labels)}; weights left to right: {', '.join(f'{w:g}' for w in weights)})")
    record = {
        "kind": "ufo-video sweep",
        "lora": entries[0]["lora"],
        "loras": [e["lora"] for e in entries if e["weight"] == weights[0]],
        "checkpoints": labels,
        "weights": weights,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": request.seed,
        "image": request.image,
        "settings": settings.to_dict() | {"loras": []},
        "videos": entries,
        "grid": grid_path.name,
        "trend": sweep_trends(entries) if len(weights) > 1 else None,
        "recommendation": recommend(entries, rule) if 0.0 in weights and len(weights) > 1 else None,
    }
    path = write_json_atomic(out_dir / "sweep.json", record, allow_nan=False, exclusive=not overwrite)
    from ufo_video.infer.sweep_report import write_sweep_html

    log(f"wrote {path} and {write_sweep_html(record, out_dir)}")
    return path


def sweep_trends(entries: list[dict]) -> dict:
    """`eval.summary.trend` over the weight: all checkpoints together ("all") and each alone."""
    from ufo_video.eval.summary import trend

    trends = {"all": trend([(e["weight"], e["metrics"]) for e in entries])}
    for label in dict.fromkeys(e["checkpoint"] for e in entries):
        trends[label] = trend([(e["weight"], e["metrics"]) for e in entries if e["checkpoint"] == label])
    return trends


def format_sweep_table(record: dict) -> str:
    """Plain table: one row per (checkpoint, weight), the rule and the recommendation."""
    rec = record.get("recommendation")
    best = (rec["checkpoint"], rec["weight"]) if rec else None
    header = ["checkpoint", "weight", "ssim", "warp_error", "bright_flk", "flow_px", "dyn_pairs", ""]
    lines = []
    for e in record["videos"]:
        m = e["metrics"]
        mark = "<- recommended" if best == (e["checkpoint"], e["weight"]) else ""
        lines.append([e["checkpoint"], f"{e['weight']:g}", f"{m['ssim']:.4f}", f"{m['warp_error']:.4f}",
                      f"{m['brightness_flicker']:.4f}", f"{m['flow_px']:.3f}", f"{m['dynamic_pairs']:.3f}", mark])  # fmt: skip
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(header)]
    out = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *lines]]
    out.append("more consistent = higher ssim, lower warp_error / bright_flk; more motion = higher flow_px / dyn_pairs")
    if rec is None:
        out.append("recommendation: needs weight 0 (the base) and at least one other weight in --weights")
    else:
        out.append(f"rule: {rec['rule']}")
        choice = "the base model (weight 0)" if rec["checkpoint"] is None else f"{rec['checkpoint']} at weight {rec['weight']:g}"
        out.append(f"recommended: {choice} -- {rec['reason']}")
    return "\n".join(out)
