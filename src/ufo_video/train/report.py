"""What a training run tells the user: the start summary, a line per checkpoint, the note on
resumed settings, and `train-report.html` at the end (smoothed loss, learning rate, samples,
checkpoints, timings) — readable without TensorBoard.
"""

from __future__ import annotations

import math
import time
from html import escape
from pathlib import Path
from typing import Any

from ufo_video.atomic import write_text_atomic
from ufo_video.data.skips import SHOWN, more_line
from ufo_video.train import checkpoint as ckpt

REPORT_NAME = "train-report.html"


def _data_lines(loader: Any) -> list[str]:
    samples = getattr(loader, "samples", None)
    lines = []
    if isinstance(samples, dict):
        types: dict[str, int] = {}
        for s in samples.values():
            types[s.info.type] = types.get(s.info.type, 0) + 1
        kinds = ", ".join(f"{n} {t}{'s' if n != 1 else ''}" for t, n in sorted(types.items()))
        lines.append(f"  data: {len(samples)} samples ({kinds}), {len(loader)} batches per epoch per process")
    else:
        lines.append(f"  data: {len(loader)} batches per epoch per process (latent cache)")
    batches = getattr(loader, "batches", None)
    if batches:
        from ufo_video.data.plan import describe_buckets

        shown = ", ".join(f"{k} x{n}" for k, n in describe_buckets(batches).items())
        lines.append(f"  buckets (HxWxframes x batches): {shown}")
    failures = getattr(loader, "failures", None) or []
    if failures:
        lines.append(f"  skipped {len(failures)} unreadable file(s), e.g. {failures[0][0]}: {failures[0][1]}")
    notices = getattr(loader, "notices", None) or []
    for path, message in notices[:SHOWN]:
        lines.append(f"  clip_mode=video: {path}: {message}")
    if len(notices) > SHOWN:
        rest = (m for _, m in notices[SHOWN:])
        lines.append(f"  clip_mode=video: {more_line(len(notices) - SHOWN, rest, '`ufo-video data check` lists all')}")
    return lines


def applied_mode(run: Any) -> str:
    return run.model.applied_train_mode(run.cfg.train.train_mode)


def expert_note(run: Any) -> str:
    """Which expert a multi-expert model's run trains and its timestep range ("" for one expert)."""
    experts = run.model.experts()
    if len(experts) < 2:
        return ""
    e = run.extra["expert"]
    return (f"expert: {e.component} (timesteps {e.t_min:g}-{e.t_max:g} of 1000; the model's experts: "
            f"{', '.join(x.component for x in experts)}; one UFO LoRA per expert)")


def start_summary(run: Any, loader: Any, threads: int) -> list[str]:
    """What the run is about to do, before the first step."""
    cfg, acc = run.cfg, run.accelerator
    t = cfg.train
    n = acc.num_processes
    per_step = t.train_batch_size * n * t.gradient_accumulation_steps
    lines = [f"training {run.extra['total_steps']} steps of {per_step} sample(s) (batch {t.train_batch_size} per "
             f"process x {n} process{'es' if n != 1 else ''} x {t.gradient_accumulation_steps} accumulation "
             f"step{'s' if t.gradient_accumulation_steps != 1 else ''}), clip_mode={cfg.data.clip_mode}, "
             f"train_mode={applied_mode(run)}"]
    if applied_mode(run) != t.train_mode:
        lines.append(f"  train.train_mode={t.train_mode} does not apply: this model has no image conditioning, so it "
                     "trains text-to-video")
    if expert_note(run):
        lines.append(f"  {expert_note(run)}")
    if run.model.training_fps is not None:
        lines.append(f"  frame rate: {run.model.training_fps:g} fps (train.fps; the model is conditioned on it: "
                     "generate at the same rate)")
    lines += _data_lines(loader)
    lines.append(f"  device: {acc.device} ({n} process(es), {threads} CPU thread(s)); weights "
                 f"{cfg.model.weight_dtype}, mixed precision {t.mixed_precision}, LoRA in fp32")
    lines += run.extra.get("memory_lines", [])  # train/memory_estimate.py, computed before the model loaded
    lines.append("  " + run.summary.describe())
    state = " + state folder" if t.save_state else ""
    # the sizes and the free disk follow in the `disk:` line (train/disk.py), computed once
    lines.append(f"  output: {run.output_dir}; a checkpoint (LoRA{state}) every {t.checkpointing_steps} steps")
    return lines


def checkpoint_line(run: Any, step: int, loss: float | None) -> str:
    path = ckpt.lora_file(run.output_dir, step)
    state = f" + {ckpt.state_dir(run.output_dir, step).name}/" if run.cfg.train.save_state else ""
    shown = f", loss {loss:.5f}" if loss is not None else ""
    return f"saved {path.name}{state} (step {step}{shown})"


def settings_note(folder: Path, progress: Any, cfg: Any) -> str | None:
    """None when the resumed run has the saved run's settings; else the keys that differ."""
    now = cfg.flat_settings()
    old = getattr(progress, "settings", None) or {}
    if not old:  # a state saved before settings were recorded: only the fingerprint can tell
        if progress.fingerprint in ("", cfg.fingerprint()):
            return None
        return f"note: {folder} was written with different settings (fingerprint {progress.fingerprint}); continuing"
    changed = sorted(k for k in set(old) | set(now) if old.get(k, "<unset>") != now.get(k, "<unset>"))
    if not changed:
        return None
    shown = "; ".join(f"{k}: {old.get(k, '<unset>')!r} -> {now.get(k, '<unset>')!r}" for k in changed[:8])
    more = f" (+{len(changed) - 8} more)" if len(changed) > 8 else ""
    return f"note: resuming {folder.name} with changed settings: {shown}{more}"


# ---- train-report.html ---------------------------------------------------------------------------


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """TensorBoard-style exponential moving average with bias correction (the first points are
    not dragged towards 0)."""
    out, avg, n = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(float("nan"))
            continue
        n += 1
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight**n))
    return out


def _read_losses(path: Path) -> tuple[list[int], list[float], list[float]]:
    from ufo_video.train.loss_log import read_records

    steps, losses, lrs = [], [], []
    for r in read_records(path):
        loss = r["loss"] if isinstance(r["loss"], (int, float)) else float("nan")
        steps.append(int(r["step"]))
        losses.append(float(loss))
        lrs.append(float(r.get("lr", float("nan"))))
    return steps, losses, lrs


def write_train_report(run: Any, result: Any, timings: dict[str, Any]) -> Path:
    """Write `output_dir/train-report.html` (atomic) and return its path."""
    from ufo_video.charts import line_chart

    out = run.output_dir
    steps, losses, lrs = _read_losses(out / "losses.jsonl")
    parts = [f"<h1>Training report: {escape(out.name)}</h1>",
             f"<p>{'interrupted' if result.interrupted else 'finished'}: {result.steps} steps in "
             f"{result.seconds:.1f} s; final loss {'n/a' if result.final_loss is None else f'{result.final_loss:.5f}'}; "
             f"written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"]  # fmt: skip
    if steps:
        series = {"loss (smoothed)": smooth(losses)}
        if len(steps) > 1:
            series = {"loss": losses, **series}
        parts.append(line_chart(series, steps, "training loss", "step", "loss", markers=len(steps) <= 30, floor=0.0))
        parts.append(line_chart({"lr": lrs}, steps, "learning rate", "step", "lr", markers=len(steps) <= 30, floor=0.0))
    else:
        parts.append("<p>No step completed: no loss to show.</p>")
    rows = []
    for step, paths in sorted(ckpt.list_steps(out).items()):
        names = ", ".join(escape(p.name) for p in sorted(paths))
        rows.append(f"<tr><td>{step}</td><td>{names}</td></tr>")
    parts.append("<h2>Checkpoints</h2>" + (f"<table><tr><th>step</th><th>files</th></tr>{''.join(rows)}</table>"
                                           if rows else "<p>none</p>"))  # fmt: skip
    samples = sorted((out / "samples").glob("*")) if (out / "samples").is_dir() else []
    if samples:
        items = "".join(
            f'<figure><video src="samples/{escape(p.name)}" controls loop muted width="256"></video>'
            f"<figcaption>{escape(p.name)}</figcaption></figure>"
            for p in samples if p.suffix == ".mp4"
        )
        parts.append(f"<h2>Validation samples</h2><div class='grid'>{items}</div>")
    t = run.cfg.train
    timing = {**timings, "steps": result.steps,
              "s_per_step": round(result.seconds / result.steps, 3) if result.steps else None}  # fmt: skip
    parts.append("<h2>Timings</h2><table>" + "".join(
        f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>" for k, v in timing.items()) + "</table>")
    settings = {"learning_rate": t.learning_rate, "lr_scheduler": t.lr_scheduler, "rank": run.cfg.lora.rank,
                "network_alpha": run.cfg.lora.network_alpha, "clip_mode": run.cfg.data.clip_mode,
                "train_mode": applied_mode(run), "model": run.cfg.model.pretrained_model_name_or_path}  # fmt: skip
    if expert_note(run):
        settings["expert"] = expert_note(run).removeprefix("expert: ")
    parts.append("<h2>Settings</h2><table>" + "".join(
        f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in settings.items())
        + "</table><p>All settings: config.toml</p>")  # fmt: skip
    html = ("<!doctype html><html><head><meta charset='utf-8'><title>ufo-video training report</title><style>"
            "body{font-family:sans-serif;margin:1.5em;max-width:70em} td,th{padding:2px 10px;text-align:left}"
            " .grid{display:flex;flex-wrap:wrap;gap:10px} svg{margin:4px}</style></head><body>"
            + "\n".join(parts) + "</body></html>")  # fmt: skip
    path = out / REPORT_NAME
    write_text_atomic(path, html)
    return path
