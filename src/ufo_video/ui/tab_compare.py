"""Compare tab: one prompt and seed at two settings (two weights, or two LoRAs) side by side.

Both videos come from the one kept model (both LoRA files attached once; each side switches the
other off with weight 0, which is exact), play in step in the page, and are scored with the same
metrics as `ufo-video eval` (consistency, flicker, motion), read back from the written files.
"""

from __future__ import annotations

from typing import Any

from ufo_video.errors import UfoError
from ufo_video.infer.settings import LoraSpec
from ufo_video.ui.context import DEVICE, UiContext
from ufo_video.ui.inputs import existing_file, number, user_errors, weight_box
from ufo_video.ui.tab_generate import SETTING_NAMES, StepProgress, request_from_values, settings_from_values

METRIC_COLUMNS = ("ssim", "psnr_db", "warp_error", "brightness_flicker", "sharpness_flicker", "flow_px", "dynamic_pairs")


def compare(ctx: UiContext, progress: Any, values: list[Any]) -> tuple[str, str, list[list], str]:
    """values: prompt, negative, seed, LoRA A, weight A, LoRA B, weight B, *settings."""
    from dataclasses import replace

    from ufo_video.eval.cli import evaluate_videos
    from ufo_video.infer.run import generate_videos, plan_output_paths

    prompt, negative, seed, path_a, weight_a, path_b, weight_b = values[:7]
    ctx.device_free()
    sides = []
    for name, path, weight in (("A", path_a, weight_a), ("B", path_b, weight_b)):
        w = float(number(weight, f"{name} weight", minimum=0.0, maximum=2.0))
        p = existing_file(path, f"{name} LoRA file", (".safetensors",), ctx.allowed).resolve() if str(path or "").strip() else None
        if p is None and w != 0:
            raise UfoError(f"{name} LoRA file: give a LoRA for weight {w:g} (or set the weight to 0 for the base model)")
        sides.append((p, w))
    files = list(dict.fromkeys(p for p, _ in sides if p is not None))  # each file attached once
    notes: list[str] = []
    base = settings_from_values(list(values[7 : 7 + len(SETTING_NAMES)]), [], notes, ctx.allowed)
    settings = replace(base, loras=tuple(LoraSpec(str(f), 0.0) for f in files))
    request = request_from_values(prompt, negative, seed)
    folder = ctx.folder("compare")
    ctx.session.log = notes.append
    bar = StepProgress(progress, videos=2)
    outputs = []
    for i, (path, weight) in enumerate(sides):
        bar.video = i
        per_video = replace(settings, loras=tuple(LoraSpec(str(f), weight if f == path else 0.0) for f in files))
        [out] = plan_output_paths(1, None, folder, "mp4")
        with ctx.session.use(per_video, bar.step) as gen:
            # the sidecar records only the LoRA this side used (the others are off, exactly)
            own = replace(per_video, loras=tuple(s for s in per_video.loras if s.weight != 0 or s.path == str(path)))
            [(video, _)] = generate_videos(own, [request], [out], "mp4", log=notes.append, generator=gen)
        outputs.append(video)
    report = evaluate_videos(outputs)
    table = []
    for label, (path, weight), row in zip("AB", sides, report["videos"]):
        name = path.name if path else "base (no LoRA)"
        table.append([label, name, weight] + [round(float(row["metrics"][k]), 5) for k in METRIC_COLUMNS])
    notes.append("more consistent = higher ssim / psnr_db, lower warp_error and flicker; more motion = higher flow_px / dynamic_pairs")
    return str(outputs[0]), str(outputs[1]), table, "\n".join(notes)


def build(ctx: UiContext, common: Any) -> None:
    import gradio as gr

    gr.Markdown("One prompt and seed at two settings, side by side, playing in step. Uses the video settings of the "
                "Generate tab. Leave a LoRA empty with weight 0 for the base model.")  # fmt: skip
    with gr.Row():
        prompt = gr.Textbox(label="prompt", lines=2, scale=3)
        seed = gr.Number(value=43, label="seed", scale=1)
    with gr.Row():
        with gr.Column():
            path_a = gr.Textbox(label="A LoRA file", placeholder="empty = base model")
            weight_a = weight_box("A weight", value=0.0)
        with gr.Column():
            path_b = gr.Textbox(label="B LoRA file", placeholder="path/to/ufo.safetensors")
            weight_b = weight_box("B weight", value=0.15)
    run = gr.Button("Compare", variant="primary")
    with gr.Row(elem_classes=["ufo-sync-group"]):
        video_a = gr.Video(label="A", autoplay=True, loop=True)
        video_b = gr.Video(label="B", autoplay=True, loop=True)
    together = gr.Button("play both from the start", size="sm")
    headers = ["side", "LoRA", "weight", *METRIC_COLUMNS]
    metrics = gr.Dataframe(headers=headers, label="eval metrics (as `ufo-video eval`)", interactive=False)
    log = gr.Textbox(label="log", lines=3)

    @user_errors
    def on_compare(progress=gr.Progress(), *values):  # noqa: B008
        return compare(ctx, progress, list(values))

    run.click(on_compare, inputs=[prompt, common.negative, seed, path_a, weight_a, path_b, weight_b, *common.settings],
              outputs=[video_a, video_b, metrics, log], api_name="compare", show_progress_on=video_a,
              **DEVICE)  # fmt: skip  (one progress bar, not one per output)
    together.click(None, js="() => { for (const v of document.querySelectorAll('.ufo-sync-group video')) "
                   "{ v.currentTime = 0; v.play().catch(() => {}); } }")  # fmt: skip
