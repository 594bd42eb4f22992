"""Generate tab: t2v / i2v with any LoRA rows, each at its own weight, through `generate_videos`.

Its "video settings" (model, size, frames, steps, fps, guidance, dtype, memory mode, step cache, blocks to swap)
are shared with the Compare and Sweep tabs. The model stays loaded between clicks; weights
change with `set_lora_weights` and the log says whenever a load happens.

An i2v start (and end) image is copied next to the video before it is made, and the sidecar records
that copy: the browser's upload lives in Gradio's temporary cache, which is cleared, and
`ufo-video generate --from-sidecar` must keep working.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ufo_video.errors import UfoError
from ufo_video.infer.settings import GenerationSettings, LoraSpec, VideoRequest
from ufo_video.ui.context import DEVICE, UiContext
from ufo_video.ui.inputs import MAX_LORAS, MODES, image_file, image_input, lora_rows, number, user_errors, weight_box

# order of the shared settings components (handlers receive their values in this order)
SETTING_NAMES = ("model", "height", "width", "frames", "fps", "steps", "guidance", "dtype", "memory_mode", "cache",
                 "blocks_to_swap")


@dataclass
class Common:
    """Components other tabs reuse as inputs."""

    settings: list  # in SETTING_NAMES order
    negative: Any


def settings_from_values(values: list[Any], loras: list[tuple[Path, float]], notes: list[str],
                         allowed: Sequence[Path] | None = None) -> GenerationSettings:  # fmt: skip
    """GenerationSettings from the shared components' values; rounding notices go to `notes`;
    the model folder must lie in `allowed` (None: anywhere)."""
    from ufo_video.ui.inputs import confine

    from ufo_video.config import MEMORY_MODES
    from ufo_video.infer.settings import CACHE_KINDS, round_frames, round_size

    v = dict(zip(SETTING_NAMES, values))
    model = Path(str(v["model"] or "").strip()).expanduser()
    if not str(v["model"] or "").strip():
        raise UfoError("model folder: give the folder of a diffusers model (e.g. the shipped tiny base)")
    confine(model, "model folder", allowed)
    if not (model / "model_index.json").is_file():
        raise UfoError(f"model folder: {model} is not a model folder (no model_index.json); "
                       "give e.g. src/ufo_video/assets/tiny-base or a downloaded model folder")  # fmt: skip
    height = number(v["height"], "height", minimum=16, maximum=4096, integer=True)
    width = number(v["width"], "width", minimum=16, maximum=4096, integer=True)
    size = round_size(int(height), int(width), notes.append)
    frames = round_frames(int(number(v["frames"], "frames", minimum=1, maximum=1025, integer=True)), notes.append)
    if v["memory_mode"] not in MEMORY_MODES:
        raise UfoError(f"memory mode: {v['memory_mode']!r} is not one of {', '.join(MEMORY_MODES)}")
    if v["cache"] not in CACHE_KINDS:
        raise UfoError(f"step cache: {v['cache']!r} is not one of {', '.join(CACHE_KINDS)}")
    if v["dtype"] not in ("bf16", "fp16", "fp32"):
        raise UfoError(f"dtype: {v['dtype']!r} is not one of bf16, fp16, fp32")
    return GenerationSettings(
        model=str(model), sample_size=size, video_length=frames,
        fps=int(number(v["fps"], "fps", minimum=1, maximum=120, integer=True)),
        num_inference_steps=int(number(v["steps"], "steps", minimum=1, maximum=1000, integer=True)),
        guidance_scale=float(number(v["guidance"], "guidance scale", minimum=0.0, maximum=50.0)),
        memory_mode=v["memory_mode"], weight_dtype=v["dtype"], device="auto",
        loras=tuple(LoraSpec(str(p), w) for p, w in loras), cache=v["cache"],
        blocks_to_swap=int(number(v["blocks_to_swap"], "blocks to swap", minimum=0, maximum=10_000, integer=True)),
    )  # fmt: skip


def request_from_values(prompt: Any, negative: Any, seed: Any, mode: str = "t2v", image: Any = None,
                        end_image: Any = None) -> VideoRequest:  # fmt: skip
    if not str(prompt or "").strip():
        raise UfoError("prompt: the prompt is empty; describe the video")
    seed = int(number(seed, "seed", minimum=0, maximum=2**63 - 1, integer=True))
    if mode not in MODES:
        raise UfoError(f"mode: {mode!r} is not t2v or i2v")
    start = end = None
    if mode == "i2v":
        if not image:
            raise UfoError("start image: i2v needs a start image (or switch the mode to t2v)")
        start = image_file(image, "start image")
        end = image_file(end_image, "end image") if end_image else None
    return VideoRequest(str(prompt), str(negative or ""), seed, start, end)


class StepProgress:
    """Denoising steps (and videos, for several) onto a Gradio progress bar."""

    def __init__(self, progress: Any, videos: int = 1):
        self.progress, self.videos, self.video = progress, videos, 0

    def step(self, done: int, total: int) -> None:
        what = f"video {self.video + 1}/{self.videos}, " if self.videos > 1 else ""
        self.progress(((self.video * total) + done, self.videos * total), desc=f"{what}denoising step {done}/{total}",
                      unit="steps")  # fmt: skip


def generate(ctx: UiContext, progress: Any, values: list[Any]) -> tuple[str, str, str]:
    """values: mode, image, end image, prompt, negative, seed, *settings, *LoRA rows, more LoRAs."""
    from ufo_video.infer.run import generate_videos, plan_output_paths

    mode, image, end_image, prompt, negative, seed = values[:6]
    settings_values = values[6 : 6 + len(SETTING_NAMES)]
    loras = lora_rows(list(values[6 + len(SETTING_NAMES) :]), ctx.allowed)
    notes: list[str] = []
    settings = settings_from_values(settings_values, loras, notes, ctx.allowed)
    ctx.device_free()
    request = request_from_values(prompt, negative, seed, mode, image, end_image)
    paths = plan_output_paths(1, None, ctx.folder("generate"), "mp4")
    request = keep_images(request, paths[0])
    ctx.session.log = notes.append
    loads = ctx.session.loads
    bar = StepProgress(progress)
    try:
        with ctx.session.use(settings, bar.step) as gen:
            [(video, sidecar)] = generate_videos(settings, [request], paths, "mp4", log=notes.append, generator=gen)
    except BaseException:
        for kept in (request.image, request.end_image):  # no video: its copied images go too
            if kept:
                Path(kept).unlink(missing_ok=True)
        raise
    notes.append("model loaded for this video" if ctx.session.loads != loads else "model kept loaded (no reload)")
    return str(video), str(sidecar), "\n".join(notes)


def keep_images(request: VideoRequest, video: Path) -> VideoRequest:
    """The request with its start/end image copied next to `video` (VIDEO-start.png, ...), so the
    sidecar names a file that stays (not the upload in Gradio's cache)."""
    kept = {}
    for field, tag in (("image", "start"), ("end_image", "end")):
        src = getattr(request, field)
        if src:
            dst = video.with_name(f"{video.stem}-{tag}{Path(src).suffix.lower() or '.png'}")
            shutil.copyfile(src, dst)
            kept[field] = str(dst.resolve())
    return replace(request, **kept) if kept else request


# the shipped tiny base draws 64x64, 9 frames (docs/tiny-base-model.md); the demo uses 12 steps
TINY_DEFAULTS = {"height": 64, "width": 64, "frames": 9, "steps": 12}


def page_defaults(model: str) -> dict[str, Any]:
    """Starting values of the settings: the config's (the reference's predict values) for a real
    model, the tiny base's own size for it; fp32 on a CPU (bf16 there is slow), else the config's."""
    import torch

    from ufo_video.config import UfoConfig
    from ufo_video.ui.defaults import DEFAULT_MODEL

    inf, mod = UfoConfig().infer, UfoConfig().model
    values = {"height": inf.sample_size[0], "width": inf.sample_size[1], "frames": inf.video_length,
              "steps": inf.num_inference_steps, "fps": inf.fps, "guidance": inf.guidance_scale, "seed": inf.seed,
              "dtype": mod.weight_dtype if torch.cuda.is_available() else "fp32"}  # fmt: skip
    if Path(model).resolve() == DEFAULT_MODEL.resolve():
        values.update(TINY_DEFAULTS)
    return values


def size_labels(model: str | None) -> dict[str, str]:
    """Labels of height, width and frames naming the chosen model's own rules (its VAE and patch:
    the shipped tiny base takes 2k+1 frames, most models 4k+1); the rule in words while the field
    holds no model folder (generating then names that folder's problem)."""
    from ufo_video.infer.settings import model_rules

    generic = {"height": "height (the model's rule)", "width": "width (the model's rule)",
               "frames": "frames (the model's rule)"}  # fmt: skip
    if not model or not Path(model).is_dir():
        return generic
    try:
        rules = model_rules(model)
    except UfoError:
        return generic
    if rules is None:
        return generic
    side = f"multiple of {rules.size_multiple}"
    return {"height": f"height ({side})", "width": f"width ({side})", "frames": f"frames ({rules.temporal_factor}k+1)"}


def build(ctx: UiContext) -> Common:
    import gradio as gr

    from ufo_video.config import MEMORY_MODES
    from ufo_video.infer.settings import CACHE_KINDS

    d = page_defaults(ctx.model)
    labels = size_labels(ctx.model)

    with gr.Row():
        with gr.Column(scale=3):
            mode = gr.Radio(list(MODES), value="t2v", label="mode", info="i2v keeps the start image as frame 0")
            prompt = gr.Textbox(label="prompt", lines=2, elem_id="ufo-prompt")
            negative = gr.Textbox(label="negative prompt", lines=1)
            with gr.Row():
                image = image_input("start image (i2v)", height=160)
                end_image = image_input("end image (i2v, optional)", height=160)
            gr.Markdown("**LoRAs** (UFO's useful weights: 0.05-0.2)")
            rows, lora_inputs = [], []
            for i in range(MAX_LORAS):
                with gr.Row(visible=i == 0) as row:
                    path = gr.Textbox(label=f"LoRA {i + 1} file", placeholder="path/to/ufo.safetensors", scale=3,
                                      elem_id=f"ufo-lora-{i + 1}")
                    weight = weight_box(f"LoRA {i + 1} weight", elem_id=f"ufo-weight-{i + 1}", scale=2)
                rows.append(row)
                lora_inputs += [path, weight]
            shown = gr.State(1)
            add = gr.Button(f"+ add a LoRA row (up to {MAX_LORAS}; more below)", size="sm")
            with gr.Accordion("more LoRAs", open=False):
                more = gr.Textbox(label="more LoRAs: one PATH:WEIGHT per line (weight 0-2; PATH alone = 0.15)", lines=2)
            with gr.Accordion("video settings (also used by Compare and Sweep)", open=True):
                model = gr.Textbox(value=ctx.model, label="model folder")
                with gr.Row():
                    seed = gr.Number(value=d["seed"], label="seed")
                    steps = gr.Number(value=d["steps"], label="steps", elem_id="ufo-steps")
                    guidance = gr.Number(value=d["guidance"], label="guidance scale")
                with gr.Row():
                    height = gr.Number(value=d["height"], label=labels["height"])
                    width = gr.Number(value=d["width"], label=labels["width"])
                    frames = gr.Number(value=d["frames"], label=labels["frames"])
                    fps = gr.Number(value=d["fps"], label="fps")
                with gr.Row():
                    dtype = gr.Dropdown(["bf16", "fp16", "fp32"], value=d["dtype"], label="dtype")
                    cache = gr.Dropdown(list(CACHE_KINDS), value="none", label="step cache")
                with gr.Row():  # their own row: the long mode names (…_and_fp8_scaled) and the swap's note fit
                    memory = gr.Dropdown(list(MEMORY_MODES), value="model_full_load", label="memory mode",
                                         info="GPU_memory_mode: where the weights live (docs/memory.md)", scale=3)
                    swap = gr.Number(value=0, label="blocks to swap", elem_id="ufo-swap", scale=2,
                                     info="0: none; N: the last N transformer blocks wait in host memory, each "
                                     "copied to the GPU as it runs (less VRAM, a little slower; not with "
                                     "sequential_cpu_offload or group_offload)")  # fmt: skip
            run = gr.Button("Generate", variant="primary", elem_id="ufo-generate")
        with gr.Column(scale=2):
            video = gr.Video(label="video", autoplay=True, loop=True, elem_id="ufo-video")
            sidecar = gr.File(label="sidecar (every setting; `ufo-video generate --from-sidecar` makes it again)")
            log = gr.Textbox(label="log", lines=4)

    def add_row(n: int):
        n = min(n + 1, MAX_LORAS)
        return [n] + [gr.update(visible=i < n) for i in range(MAX_LORAS)]

    add.click(add_row, inputs=shown, outputs=[shown, *rows], queue=False, api_name=False, show_progress="hidden")

    def relabel(folder: str):  # the chosen model's size rules on the fields (not per keystroke: it reads configs)
        try:  # only a folder the page may read (`--allow-dir`); Generate names the refusal
            ctx.confine(Path(str(folder or "")), "model folder")
        except UfoError:
            folder = ""
        found = size_labels(folder)
        return [gr.update(label=found[k]) for k in ("height", "width", "frames")]

    for event in (model.blur, model.submit):
        event(relabel, inputs=model, outputs=[height, width, frames], queue=False, api_name=False,
              show_progress="hidden")  # fmt: skip
    settings = [model, height, width, frames, fps, steps, guidance, dtype, memory, cache, swap]

    @user_errors
    def on_generate(progress=gr.Progress(), *values):  # noqa: B008 - Gradio's way to ask for a progress bar
        return generate(ctx, progress, list(values))

    run.click(on_generate, inputs=[mode, image, end_image, prompt, negative, seed, *settings, *lora_inputs, more],
              outputs=[video, sidecar, log], api_name="generate", show_progress_on=video, **DEVICE)  # fmt: skip
    # one progress bar (on the video): on every empty output the bars were drawn over each other
    return Common(settings, negative)
