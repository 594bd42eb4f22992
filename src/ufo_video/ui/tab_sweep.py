"""Sweep and choose tab: checkpoints x weights through `infer.sweep.run_sweep` (the code of
`ufo-video sweep`) on the kept model -> grid, metrics table, charts against the weight and the
recommended (checkpoint, weight) by the stated rule of `eval.choose`."""

from __future__ import annotations

import json
from typing import Any

from ufo_video.errors import UfoError
from ufo_video.infer.settings import LoraSpec
from ufo_video.ui.context import DEVICE, UiContext
from ufo_video.ui.inputs import number, slider, user_errors
from ufo_video.ui.tab_generate import SETTING_NAMES, request_from_values, settings_from_values

CONSISTENCY_CHOICES = ("warp_error", "ssim", "psnr_db", "brightness_flicker", "sharpness_flicker")
TABLE = ("ssim", "warp_error", "brightness_flicker", "flow_px", "dynamic_pairs")


def next_sweep_folder(ctx: UiContext) -> Any:
    root = ctx.folder("sweeps")
    n = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
    return root / f"{n:04d}"


def sweep(ctx: UiContext, progress: Any, values: list[Any]) -> tuple[str, list[list], str, str, str, str]:
    """values: LoRA files/folders (one per line), weights, keep motion, consistency metric, prompt,
    negative, seed, *settings."""
    from dataclasses import replace

    from ufo_video.eval.choose import ChoiceRule
    from ufo_video.infer.sweep import expand_lora_paths, format_sweep_table, parse_weights, run_sweep
    from ufo_video.infer.sweep_report import charts, recommendation_html

    lora_text, weights_text, keep, consistency, prompt, negative, seed = values[:7]
    ctx.device_free()
    items = [line.strip() for line in str(lora_text or "").splitlines() if line.strip()]
    if not items:
        raise UfoError("checkpoints: give LoRA files or a training output_dir, one per line")
    try:
        paths = expand_lora_paths(items)
    except UfoError as exc:
        raise UfoError(f"checkpoints: {exc}") from None
    weights = parse_weights(str(weights_text or ""))  # its errors name "--weights"
    rule = ChoiceRule(str(consistency), "flow_px", float(number(keep, "keep motion share", minimum=0.0, maximum=1.0)))
    notes: list[str] = []
    base = settings_from_values(list(values[7 : 7 + len(SETTING_NAMES)]), [], notes)
    settings = replace(base, loras=tuple(LoraSpec(str(p), 0.0) for p in paths))
    request = request_from_values(prompt, negative, seed)
    out = next_sweep_folder(ctx)
    ctx.session.log = notes.append
    state = {"video": 0, "videos": 1}

    def on_video(done: int, total: int, what: str) -> None:
        state.update(video=done, videos=total)
        progress((done, total), desc=what, unit="videos")

    def on_step(done: int, total: int) -> None:
        progress((state["video"] * total + done, state["videos"] * total), desc=f"video {state['video'] + 1}/"
                 f"{state['videos']}: denoising step {done}/{total}", unit="steps")  # fmt: skip

    with ctx.session.use(settings, on_step) as gen:
        record_path = run_sweep(replace(settings, loras=()), request, list(settings.loras), weights, out, "mp4",
                                log=notes.append, rule=rule, generator=gen, on_video=on_video, overwrite=False)  # fmt: skip
    record = json.loads(record_path.read_text())
    table = [[e["checkpoint"], e["weight"]] + [round(float(e["metrics"][k]), 5) for k in TABLE] for e in record["videos"]]
    plot = charts(record) if len(weights) > 1 else "<p>one weight: nothing to plot</p>"
    notes.append(format_sweep_table(record))
    return (str(out / record["grid"]), table, plot, recommendation_html(record), str(out / "sweep.html"), "\n".join(notes))


def build(ctx: UiContext, common: Any) -> None:
    import gradio as gr

    gr.Markdown("Every checkpoint at every weight, same prompt and seed (the video settings of the Generate tab). "
                "The recommendation follows a stated rule: the best consistency among the settings that keep a chosen "
                "share of the base model's motion.")  # fmt: skip
    with gr.Row():
        loras = gr.Textbox(label="checkpoints: LoRA files or a training output_dir (all its checkpoint-N.safetensors), "
                           "one per line", lines=3, scale=3, elem_id="ufo-sweep-loras")  # fmt: skip
        with gr.Column(scale=2):
            weights = gr.Textbox(value="0,0.05,0.1,0.2", label="weights (comma-separated; include 0, the base)")
            keep = slider(0.0, 1.0, 0.8, "keep at least this share of the base's motion", step=0.05)
            consistency = gr.Dropdown(list(CONSISTENCY_CHOICES), value="warp_error", label="consistency metric")
    with gr.Row():
        prompt = gr.Textbox(label="prompt", lines=2, scale=3, elem_id="ufo-sweep-prompt")
        seed = gr.Number(value=43, label="seed", scale=1)
    run = gr.Button("Sweep", variant="primary", elem_id="ufo-sweep-run")
    recommendation = gr.HTML(label="recommendation", elem_id="ufo-sweep-recommendation")
    with gr.Row():
        grid = gr.Video(label="grid: one row per checkpoint, weight grows to the right", autoplay=True, loop=True)
        plot = gr.HTML(label="consistency and motion against the weight")
    table = gr.Dataframe(headers=["checkpoint", "weight", *TABLE], label="metrics", interactive=False)
    report = gr.File(label="sweep.html (the same page as `ufo-video sweep` writes)")
    log = gr.Textbox(label="log", lines=6)

    @user_errors
    def on_sweep(progress=gr.Progress(), *values):  # noqa: B008
        return sweep(ctx, progress, list(values))

    run.click(on_sweep, inputs=[loras, weights, keep, consistency, prompt, common.negative, seed, *common.settings],
              outputs=[grid, table, plot, recommendation, report, log], api_name="sweep", **DEVICE)  # fmt: skip
