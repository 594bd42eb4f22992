"""Sweep and choose tab: checkpoints x weights through `infer.sweep.run_sweep` (the code of
`ufo-video sweep`) on the kept model -> grid, metrics table, charts against the weight and the
recommended (checkpoint, weight) by the stated rule of `eval.choose`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ufo_video.errors import UfoError
from ufo_video.infer.settings import LoraSpec
from ufo_video.ui.context import DEVICE, UiContext
from ufo_video.ui.inputs import number, number_box, user_errors
from ufo_video.ui.tab_generate import SETTING_NAMES, request_from_values, settings_from_values

KEEP_LABEL = "keep at least this share of the base's motion (0-1)"
CONSISTENCY_CHOICES = ("warp_error", "ssim", "psnr_db", "brightness_flicker", "sharpness_flicker")


TABLE_HEADERS = ["checkpoint", "weight", "pairs", "mean consistency", "gain vs base [interval]", "motion kept [interval]",
                 "recommendable"]  # fmt: skip


def settings_rows(record: dict) -> list[list]:
    """One row per setting (the base first): the rule's numbers with their intervals."""
    from ufo_video.infer.sweep import _iv

    rec = record.get("recommendation")
    if rec is None:
        return [[e["checkpoint"], e["weight"], 1, round(float(e["metrics"]["warp_error"]), 5), "", "", ""] for e in record["videos"]]
    rows = [["base (no LoRA)", 0.0, rec["pairs"], round(rec["base"]["consistency"], 6), "", "", ""]]
    for c in rec["candidates"]:
        rows.append([c["checkpoint"], c["weight"], c["n"], round(c["consistency"], 6), _iv(c["gain"]),
                     _iv(c["motion_kept"], "{:.0%}"), "yes" if c["eligible"] else "no"])  # fmt: skip
    return rows


def next_sweep_folder(ctx: UiContext) -> Any:
    root = ctx.folder("sweeps")
    n = 1 + max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=0)
    return root / f"{n:04d}"


def sweep(ctx: UiContext, progress: Any, values: list[Any]) -> tuple[str, list[list], str, str, str, str]:
    """values: LoRA files/folders (one per line), weights, keep motion, consistency metric, prompts
    (one per line; empty: the built-in t2v set), negative, seed, seeds (comma-separated; empty: seed),
    *settings."""
    from dataclasses import replace

    from ufo_video.eval.choose import ChoiceRule
    from ufo_video.infer.sweep import expand_lora_paths, format_sweep_table, parse_weights, run_sweep
    from ufo_video.infer.sweep_report import charts, recommendation_html

    from ufo_video.infer.sweep_prompts import build_samples, default_requests, parse_seeds

    lora_text, weights_text, keep, consistency, prompt, negative, seed, seeds_text = values[:8]
    ctx.device_free()
    items = [line.strip() for line in str(lora_text or "").splitlines() if line.strip()]
    if not items:
        raise UfoError("checkpoints: give LoRA files or a training output_dir, one per line")
    for item in items:  # typed paths lie in the folders the UI was allowed (`--allow-dir`)
        ctx.confine(Path(item), "checkpoints")
    try:
        paths = expand_lora_paths(items)
    except UfoError as exc:
        raise UfoError(f"checkpoints: {exc}") from None
    weights = parse_weights(str(weights_text or ""))  # its errors name "--weights"
    rule = ChoiceRule(str(consistency), "flow_px", float(number(keep, KEEP_LABEL, minimum=0.0, maximum=1.0)))
    notes: list[str] = []
    base = settings_from_values(list(values[8 : 8 + len(SETTING_NAMES)]), [], notes, ctx.allowed)
    from ufo_video.infer.sweep import checkpoint_labels
    from ufo_video.infer.sweep_pairs import model_experts, plan_rows

    # a multi-expert model: one row per pair of files (one per expert), as `ufo-video sweep` does
    paths, rows, _ = plan_rows(paths, model_experts(base.model), checkpoint_labels(paths))
    settings = replace(base, loras=tuple(LoraSpec(str(p), 0.0) for p in paths))
    request = request_from_values("x", negative, seed)
    out = next_sweep_folder(ctx)
    lines = [line.strip() for line in str(prompt or "").splitlines() if line.strip()]
    requests = ([(replace(request, prompt=line), "") for line in lines] if lines
                else default_requests("t2v", request, out / "start-images", base.sample_size))  # fmt: skip
    seeds = parse_seeds(str(seeds_text)) if str(seeds_text or "").strip() else None
    samples = build_samples(requests, seeds)
    ctx.session.log = notes.append
    state = {"video": 0, "videos": 1}

    def on_video(done: int, total: int, what: str) -> None:
        state.update(video=done, videos=total)
        progress((done, total), desc=what, unit="videos")

    def on_step(done: int, total: int) -> None:
        progress((state["video"] * total + done, state["videos"] * total), desc=f"video {state['video'] + 1}/"
                 f"{state['videos']}: denoising step {done}/{total}", unit="steps")  # fmt: skip

    with ctx.session.use(settings, on_step) as gen:
        record_path = run_sweep(replace(settings, loras=()), samples, list(settings.loras), weights, out, "mp4",
                                log=notes.append, rule=rule, generator=gen, on_video=on_video, overwrite=False, rows=rows)  # fmt: skip
    record = json.loads(record_path.read_text())
    table = settings_rows(record)
    plot = charts(record) if len(weights) > 1 else "<p>one weight: nothing to plot</p>"
    notes.append(format_sweep_table(record))
    return (str(out / record["grid"]), table, plot, recommendation_html(record), str(out / "sweep.html"), "\n".join(notes))


def build(ctx: UiContext, common: Any) -> None:
    import gradio as gr

    gr.Markdown("Every checkpoint at every weight over every prompt and seed, each paired with the base model on the "
                "same prompt and seed (the video settings of the Generate tab). The recommendation follows a stated rule: "
                "the largest consistency gain whose interval lies above 0 and a minimum effect, among the settings that "
                "surely keep a chosen share of the base model's motion; otherwise the base.")  # fmt: skip
    with gr.Row():
        loras = gr.Textbox(label="checkpoints: LoRA files or a training output_dir (all its checkpoint-N.safetensors), "
                           "one per line", lines=3, scale=3, elem_id="ufo-sweep-loras")  # fmt: skip
        with gr.Column(scale=2):
            weights = gr.Textbox(value="0,0.05,0.1,0.2", label="weights (comma-separated; include 0, the base)",
                                 elem_id="ufo-sweep-weights")
            keep = number_box(KEEP_LABEL, 0.8, 0.0, 1.0, step=0.05, elem_id="ufo-sweep-keep")
            consistency = gr.Dropdown(list(CONSISTENCY_CHOICES), value="warp_error", label="consistency metric")
    with gr.Row():
        prompt = gr.Textbox(label="prompts, one per line (empty: the built-in set of still and moving scenes)", lines=3,
                            scale=3, elem_id="ufo-sweep-prompt")  # fmt: skip
        with gr.Column(scale=1):
            seed = gr.Number(value=43, label="seed")
            seeds = gr.Textbox(value="", label="seeds, comma-separated (e.g. 1,2,3; empty: the seed above)",
                               elem_id="ufo-sweep-seeds")
    run = gr.Button("Sweep", variant="primary", elem_id="ufo-sweep-run")
    recommendation = gr.HTML(label="recommendation", elem_id="ufo-sweep-recommendation")
    with gr.Row():
        # the charts get the wider column: two side by side (app.CSS) instead of a tall narrow stack
        with gr.Column(scale=2, min_width=320):
            grid = gr.Video(label="grid (first prompt and seed)", autoplay=True, loop=True, elem_id="ufo-sweep-grid")
        with gr.Column(scale=3, min_width=400):
            plot = gr.HTML(label="consistency and motion against the weight", elem_id="ufo-sweep-plot")
    table = gr.Dataframe(headers=TABLE_HEADERS, label="settings against the base (intervals: sweep.html)", interactive=False,
                         elem_id="ufo-sweep-table")
    report = gr.File(label="sweep.html (the same page as `ufo-video sweep` writes)")
    log = gr.Textbox(label="log", lines=6)

    @user_errors
    def on_sweep(progress=gr.Progress(), *values):  # noqa: B008
        return sweep(ctx, progress, list(values))

    run.click(on_sweep, inputs=[loras, weights, keep, consistency, prompt, common.negative, seed, seeds, *common.settings],
              outputs=[grid, table, plot, recommendation, report, log], api_name="sweep",
              show_progress_on=grid, **DEVICE)  # fmt: skip  (one progress bar: on every empty output they overlapped)
