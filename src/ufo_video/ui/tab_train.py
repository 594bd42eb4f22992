"""Train tab: watch an output_dir (loss and lr curves, checkpoints, validation samples), start a
training from a config file as a subprocess and stop it (SIGTERM: it saves a checkpoint).

The watched folder, the config file and the folders the config names (model, data, output_dir)
must lie in the app's allowed folders: the watch copies `<dir>/samples/*.mp4` into the served output
folder. A training started here has no output_dir for its first seconds; the watch says it waits."""

from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path
from typing import Any

from ufo_video.errors import UfoError
from ufo_video.ui.context import DEVICE, UiContext
from ufo_video.ui.inputs import existing_file, user_errors
from ufo_video.ui.train_watch import TrainJob, checkpoints, read_losses, samples, smoothed

REFRESH_S = 3.0
STOP_WAIT_S = 10.0  # Stop waits this long for the trainer to save and exit before answering


def _charts(output_dir: Path) -> tuple[str, str, str]:
    from ufo_video.demo.svg import line_chart

    log = read_losses(output_dir)
    if not log.steps:
        return "<p>no losses.jsonl yet</p>", "", "no steps logged yet"
    marks = len(log.steps) <= 30
    loss = line_chart({"loss": log.losses, "smoothed": smoothed(log.losses)}, log.steps, "training loss", "step", "loss",
                      markers=marks)  # fmt: skip
    lr = line_chart({"lr": log.lrs}, log.steps, "learning rate", "step", "lr", markers=marks)
    return loss, lr, f"step {log.steps[-1]}, loss {log.losses[-1]:.5g} (smoothed {smoothed(log.losses)[-1]:.5g}), lr {log.lrs[-1]:.3g}"


def _served_samples(ctx: UiContext, output_dir: Path) -> list[str]:
    """Copies of the newest validation clips inside the app's output folder (only it is served)."""
    found = samples(output_dir)
    if not found:
        return []
    view = ctx.folder("train-view") / hashlib.sha256(str(output_dir.resolve()).encode()).hexdigest()[:12]
    view.mkdir(exist_ok=True)
    shown = []
    for src in found:
        dst = view / src.name
        if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
            shutil.copy2(src, dst)
        shown.append(str(dst))
    return shown


def watch(ctx: UiContext, job: TrainJob, output_dir: Any) -> tuple[str, str, str, list[list], list[str], str]:
    text = str(output_dir or "").strip()
    if not text:
        raise UfoError("output_dir: give a training output folder to watch")
    folder = ctx.confine(Path(text).expanduser(), "output_dir")
    mine = job.output_dir is not None and job.output_dir.resolve() == folder.resolve()
    if not folder.is_dir():
        if mine and job.running():  # started here; the trainer creates the folder once it has loaded
            return f"waiting for the trainer to create {folder}  \n{job.status()}", "", "", [], [], job.log_tail()
        if mine:  # it ended before creating it: its log says why
            return f"**{folder}** was not created  \n{job.status()}", "", "", [], [], job.log_tail()
        raise UfoError(f"output_dir: folder not found: {folder}")
    loss, lr, latest = _charts(folder)
    status = f"**{folder}**: {latest}" + (f"  \n{job.status()}" if mine else "")
    return status, loss, lr, checkpoints(folder), _served_samples(ctx, folder), job.log_tail() if mine else ""


def start(ctx: UiContext, job: TrainJob, config: Any, overrides: Any) -> tuple[str, str]:
    from ufo_video.config import load_config

    cfg_file = existing_file(config, "config file", (".toml", ".yaml", ".yml"), ctx.allowed)
    try:
        extra = shlex.split(str(overrides or ""))
    except ValueError as exc:
        raise UfoError(f"overrides: {exc}") from None
    cfg = load_config(cfg_file, extra)  # its errors blame "command line": the page says "overrides"
    for value, name in ((cfg.model.pretrained_model_name_or_path, "model.pretrained_model_name_or_path"),
                        (cfg.data.train_data_dir, "data.train_data_dir"), (cfg.data.train_data_meta, "data.train_data_meta"),
                        (cfg.train.output_dir, "train.output_dir")):  # fmt: skip
        if value:
            ctx.confine(Path(value), f"config {name}")
    out = job.start(cfg_file, extra, ctx.folder("train-logs"))
    return str(out), f"started: {shlex.join(job.command)}\nlog: {job.log_path}"


def build(ctx: UiContext) -> None:
    import gradio as gr

    job = TrainJob()
    ctx.train_job = job
    with gr.Row():
        config = gr.Textbox(label="config file (e.g. configs/train_ufo.toml)", scale=3)
        overrides = gr.Textbox(label="overrides (key=value ...)", scale=3)
        start_btn = gr.Button("Start training", variant="primary", scale=1)
        stop_btn = gr.Button("Stop (saves a checkpoint)", variant="stop", scale=1)
    with gr.Row():
        output_dir = gr.Textbox(label="output_dir to watch (running or finished)", scale=4)
        refresh = gr.Button("Refresh", scale=1)
        auto = gr.Checkbox(value=False, label=f"refresh every {REFRESH_S:g} s", scale=1)
    status = gr.Markdown()
    with gr.Row():
        loss = gr.HTML()
        lr = gr.HTML()
    ckpts = gr.Dataframe(headers=["step", "LoRA file", "MB", "full state", "written"], label="checkpoints", interactive=False)
    gallery = gr.Gallery(label="validation samples (newest first)", columns=6, height=200)
    log = gr.Textbox(label="training log (last lines)", lines=8)
    timer = gr.Timer(REFRESH_S, active=False)

    @user_errors
    def on_watch(folder):
        return watch(ctx, job, folder)

    @user_errors
    def on_start(cfg, extra):
        return start(ctx, job, cfg, extra)

    @user_errors
    def on_stop():
        code = job.stop(wait=STOP_WAIT_S)
        if code is None:
            return ("stop sent (SIGTERM): the trainer finishes its current step, saves a checkpoint and exits; "
                    "the status above says when it has (Refresh)")
        return f"{job.status()}\n" + job.log_tail(6)

    outputs = [status, loss, lr, ckpts, gallery, log]
    refresh.click(on_watch, inputs=output_dir, outputs=outputs, api_name="train_watch", show_progress_on=status)
    timer.tick(on_watch, inputs=output_dir, outputs=outputs, api_name=False, show_progress="hidden")
    auto.change(lambda on: gr.Timer(active=on), inputs=auto, outputs=timer, api_name=False, queue=False)
    started = start_btn.click(on_start, inputs=[config, overrides], outputs=[output_dir, log], api_name="train_start",
                              show_progress_on=log, **DEVICE)  # fmt: skip
    started.success(lambda: True, outputs=auto, api_name=False, queue=False)
    stop_btn.click(on_stop, outputs=log, api_name="train_stop")
