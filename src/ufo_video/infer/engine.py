"""The generator: one loaded model + pipeline, its LoRAs, memory mode and step cache, making
videos from `VideoRequest`s.

Order of set-up matters: LoRAs are attached before the memory mode is applied, because
offloading installs hooks on the modules that exist at that moment (a LoRA layer added later
would stay on the wrong device), and fp8 storage skips PEFT layers only if they are already
there. Unfused LoRAs keep their own weights, so `set_lora_weights` changes them between videos
without reloading anything.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ufo_video.config import FP8_MODES
from ufo_video.errors import UfoError
from ufo_video.infer.outputs import load_image
from ufo_video.infer.settings import GenerationSettings, LoraSpec, VideoRequest

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def task_of_request(model, model_path: str, request: VideoRequest) -> str:
    """t2v, i2v (start image) or flf2v (start and end image), checked against the model's tasks
    (`model` may be a shell: configs only, before anything loads)."""
    if request.image is None:
        if request.end_image is not None:
            raise UfoError("--end-image needs --image (the start frame) as well")
        task = "t2v"
    else:
        task = "flf2v" if request.end_image else "i2v"
    if task not in model.tasks:
        kind = "image-to-video" if task == "i2v" else "first+last-frame video" if task == "flf2v" else "text-to-video"
        hint = (" (image-to-video needs an inpaint / image-to-video model)" if task != "t2v"
                else "; give a start image with --image (image_path in the UI)" if "i2v" in model.tasks else "")  # fmt: skip
        raise UfoError(f"{model_path} ({model.info.variant}) cannot make {kind}; it supports {', '.join(model.tasks)}{hint}")
    return task


class VideoGenerator:
    """Load once, generate many. Every message for the user goes through `log`."""

    def __init__(self, settings: GenerationSettings, log: Callable[[str], None] = print):
        from ufo_video.lora.apply import unfuse_before_low_precision_storage
        from ufo_video.models.memory import apply_memory_mode, resolve_device
        from ufo_video.models.registry import load_model, model_shell

        self.settings = settings
        self.log = log
        self.dtype = DTYPES[settings.weight_dtype]
        self.device = resolve_device(settings.device)
        if settings.loras:  # a broken LoRA file (NaN values, say) is named before the model loads
            from ufo_video.lora.formats import check_lora_files

            check_lora_files([spec.path for spec in settings.loras])
        shell = model_shell(settings.model)
        if settings.flow_shift is not None:  # a model that cannot take the shift is named before it loads
            check_flow_shift(shell, settings.flow_shift)
        self.model = load_model(shell, dtype=self.dtype)
        if self.model.licence:  # a model whose licence is not a permissive one: said where it is used
            log(f"licence: {self.model.licence}")
        self._pipes: dict[str, Any] = {}
        self._schedulers: dict[int, Any] = {}  # id(pipeline) -> the scheduler it was built with (the model's own)
        self._placed: type | None = None
        self.progress_label: str | None = None  # set (e.g. "video 2/5"): a tqdm bar with ETA over the denoising steps
        self.on_step: Callable[[int, int], None] | None = None  # (steps done, steps in all), e.g. a web page's bar
        self.adapter_names: list[str] = []
        self._weights: list[float] = []
        if settings.loras:
            from ufo_video.lora.apply import load_loras

            specs = [(Path(spec.path), spec.weight, spec.expert) for spec in settings.loras]
            self.adapter_names = list(load_loras(self.model, specs, fuse=settings.fuse))
            self._weights = [spec.weight for spec in settings.loras]
            how = "fused" if settings.fuse else "attached"
            if len(self.model.experts()) > 1:
                self._log_routing(how)
            else:
                shown = ", ".join(f"{Path(s.path).name} x {s.weight:g}" for s in settings.loras)
                log(f"LoRA{'s' if len(specs) > 1 else ''} {how}: {shown}")
        if self.adapter_names and settings.memory_mode == "model_cpu_offload_and_qfloat8":
            self._lora_layers_to_compute_dtype()
        # fused LoRAs are unfused before fp8 storage (they run on top of the fp8 base; see models.memory)
        self._memory = (partial(apply_memory_mode, before_fp8=unfuse_before_low_precision_storage), settings.memory_mode)
        self._swaps = self._install_block_swap(settings.blocks_to_swap) if settings.blocks_to_swap else []
        self.pipeline(self.model.tasks[0])  # applies the memory mode now, so its notice comes first
        self.cache = None
        if settings.cache == "first-block":
            from ufo_video.infer.cache import StepCache

            self.cache = StepCache(self.model, settings.cache_threshold)

    def _denoisers(self) -> list[torch.nn.Module]:
        return [self.model.expert_module(e.component) for e in self.model.experts()]

    def _install_block_swap(self, count: int) -> list:
        """Keep the last `count` blocks of every denoiser in host memory (`ufo_video.offload.block_swap`),
        after the LoRAs (loaded or fused) and fp8 storage, before the memory mode places the pipeline:
        its `.to(device)` and offload hooks then move everything but the swapped weights. The experts
        of a two-expert model share one ring of device buffers (they run one at a time), and under
        model_cpu_offload the inactive expert leaves the device as a whole. Not diffusers' group
        offloading: it has no "N of the blocks" (GPU_memory_mode=group_offload offloads them all)."""
        from ufo_video.offload import block_swap

        mode = self.settings.memory_mode
        if mode in ("sequential_cpu_offload", "group_offload"):
            raise UfoError(f"--blocks-to-swap (infer.blocks_to_swap) with GPU_memory_mode={mode}: both move the "
                           "transformer's weights; use it with model_cpu_offload, model_cpu_offload_and_qfloat8 or "
                           "model_full_load")
        denoisers = self._denoisers()
        for d in denoisers:
            d.requires_grad_(False)  # generation trains nothing: every base weight is frozen (LoRA layers stay put by name)
        lists = [self.model.swap_blocks(d) for d in denoisers]  # a family without the hook says so
        n = min(len(blocks) for blocks in lists)
        if count > n:
            raise UfoError(f"--blocks-to-swap {count} (infer.blocks_to_swap) but the transformer has {n} blocks; "
                           f"give at most {n}")
        if mode == "model_cpu_offload_and_qfloat8":  # the packed host copies hold the fp8 weights
            from ufo_video.lora.apply import unfuse_before_low_precision_storage
            from ufo_video.models.memory import enable_fp8_storage

            unfused = [enable_fp8_storage(d, self.dtype, unfuse_before_low_precision_storage) for d in denoisers]
            if any(unfused):
                self.log(f"GPU_memory_mode={mode}: the fused LoRAs run unfused on top of the fp8 weights instead "
                         "(fusing into fp8 would round a small LoRA weight away); --fuse has no effect in this mode")
        swaps = block_swap.install(lists, count, device=self.device, host="cpu")
        self.log(block_swap.describe(swaps, n))
        return swaps

    def _lora_layers_to_compute_dtype(self) -> None:
        """fp8 storage (diffusers layerwise casting) turns off PEFT's cast of a layer's input to
        the LoRA weights' dtype, so fp32 LoRA weights under a bf16 compute dtype fail with "expected
        m1 and m2 to have the same dtype". In that mode the LoRA layers compute in the model's
        compute dtype (their input is in it anyway); other modes keep them as loaded."""
        for name, param in self.model.transformer.named_parameters():
            if "lora_" in name:
                param.data = param.data.to(self.dtype)

    def lora_routing(self) -> list[dict[str, Any]]:
        """On a multi-expert model: which expert holds each attached LoRA, at its current weight
        ([] otherwise), for the log and the sidecar. Expert names and timestep ranges are the
        adapter's own (`ModelAdapter.experts`)."""
        if len(self.model.experts()) < 2 or not self.adapter_names:
            return []
        from ufo_video.lora.apply import lora_experts

        where = lora_experts(self.model)
        ranges = {e.component: f"{e.t_min:g}-{e.t_max:g}" for e in self.model.experts()}
        return [{"file": str(Path(spec.path).resolve()), "weight": float(w), "expert": where[name],
                 "expert_timesteps": ranges.get(where[name], "")}
                for spec, name, w in zip(self.settings.loras, self.adapter_names, self._weights)]  # fmt: skip

    def _log_routing(self, how: str) -> None:
        """One line per LoRA naming its expert, then a warning for each expert left without a LoRA
        while another has one, or without a UFO LoRA (a file whose `ufo_expert` names it) while
        another has one: a UFO for a multi-expert model is one LoRA per expert (a file without
        expert metadata, e.g. one made for a single-transformer model, goes to the first unless
        `@EXPERT` names another)."""
        routing = self.lora_routing()
        for r in routing:
            self.log(f"LoRA {how}: {Path(r['file']).name} x {r['weight']:g} -> {r['expert']} (timesteps {r['expert_timesteps']})")
        from ufo_video.lora.formats import file_expert

        held = {r["expert"] for r in routing}
        # a UFO file of a multi-expert model names its expert; a stack (e.g. distillation) file does not
        ufo = {r["expert"] for r in routing if file_expert(Path(r["file"])) == r["expert"]}
        for e in self.model.experts():
            if e.component in held and ufo and e.component not in ufo:
                self.log(f"warning: the expert {e.component} (timesteps {e.t_min:g}-{e.t_max:g}) runs without a UFO LoRA "
                         f"(a file trained for it: ufo_expert={e.component}) while {', '.join(sorted(ufo))} has one; "
                         f"train one with train.expert={e.component} and pass both")  # fmt: skip
            elif e.component not in held:
                others = ", ".join(sorted(held))
                self.log(f"warning: the expert {e.component} (timesteps {e.t_min:g}-{e.t_max:g}) runs without a LoRA "
                         f"while {others} has one; its part of the denoising gets no UFO. Train one LoRA per expert "
                         f"(train.expert={e.component}) and pass both (a file without ufo_expert metadata goes to the first "
                         f"expert unless named: --lora FILE:W@{e.component}), or ignore this if it is intended")  # fmt: skip

    # what may change between videos without a reload
    RELOAD_FIELDS = ("model", "weight_dtype", "device", "memory_mode", "cache", "cache_threshold", "fuse", "blocks_to_swap")

    def update_settings(self, settings: GenerationSettings) -> None:
        """New per-video settings (size, frames, steps, guidance, fps, flow shift, LoRA weights) for
        the loaded model; a change that needs a new load (model, dtype, device, memory mode, step
        cache) or other LoRA files (`replace_loras`) is refused."""
        changed = [f for f in self.RELOAD_FIELDS if getattr(settings, f) != getattr(self.settings, f)]
        if changed:
            raise UfoError(f"these settings need a new VideoGenerator (a model load): {', '.join(changed)}")
        if [(s.path, s.expert) for s in settings.loras] != [(s.path, s.expert) for s in self.settings.loras]:
            raise UfoError("other LoRA files: use replace_loras")
        shift_changed = settings.flow_shift != self.settings.flow_shift
        if shift_changed and settings.flow_shift is not None:  # a refusal leaves the generator as it was
            for own in self._schedulers.values():
                self.model.scheduler_with_shift(own, settings.flow_shift)
        self.settings = settings
        if shift_changed:
            for pipe in {id(p): p for p in self._pipes.values()}.values():
                self._shift_schedule(pipe)
        if self.adapter_names:
            self.set_lora_weights([spec.weight for spec in settings.loras])

    def replace_loras(self, specs: tuple[LoraSpec, ...]) -> None:
        """Swap the attached LoRA files on the loaded model (unfused), without reloading it. Only
        where placement cannot go stale: the CPU, or `model_full_load` (offload hooks wrap the
        modules present when they were installed)."""
        from ufo_video.lora.apply import load_loras, remove_loras

        if self.settings.fuse:
            raise UfoError("LoRAs merged with --fuse cannot be swapped; load the model again")
        if not (self.settings.memory_mode == "model_full_load" or
                (self.device.type == "cpu" and self.settings.memory_mode not in FP8_MODES)):  # fmt: skip
            raise UfoError(f"LoRAs cannot be swapped under GPU_memory_mode={self.settings.memory_mode}; load the model again")
        remove_loras(self.model)
        self.adapter_names = []
        self.adapter_names = list(load_loras(self.model, [(Path(spec.path), spec.weight, spec.expert) for spec in specs]))
        if self._swaps:  # PEFT put the new LoRA layers of swapped blocks next to their base weights, on the host
            for denoiser in self._denoisers():
                denoiser.to(self.device)  # moves all but the swapped weights
        self.settings = replace(self.settings, loras=tuple(specs))
        self._weights = [spec.weight for spec in specs]

    def set_lora_weights(self, weights: list[float]) -> None:
        """New weights for the attached (unfused) LoRAs, in the order they were given."""
        if self.settings.fuse:
            raise UfoError("LoRA weights cannot change after --fuse merged them into the model; drop --fuse")
        if len(weights) != len(self.adapter_names):
            raise UfoError(f"{len(weights)} weights given for {len(self.adapter_names)} LoRAs")
        from ufo_video.lora.apply import set_lora_weights

        set_lora_weights(self.model, dict(zip(self.adapter_names, weights)))
        self._weights = [float(w) for w in weights]

    def pipeline(self, task: str) -> Any:
        """The model's pipeline for `task`, built once; pipelines share the loaded components.

        The memory mode places (and, with offload, hooks) the shared components for one pipeline
        at a time, so it is applied again when a different pipeline class takes over (a model whose
        tasks use two pipelines); one pipeline class serving every task is placed once."""
        if task not in self._pipes:
            pipe = self.model.pipeline(task)
            pipe.set_progress_bar_config(disable=True)
            same = next((p for p in self._pipes.values() if type(p) is type(pipe)), None)
            self._pipes[task] = same or pipe
        pipe = self._pipes[task]
        if self._placed is not type(pipe):
            apply, mode = self._memory
            plan = apply(pipe, mode, self.device, self.dtype)
            if plan.notice and self._placed is None:
                self.log(plan.notice)
            self._placed = type(pipe)
        if id(pipe) not in self._schedulers:  # built just now: the model's scheduler, or one with the flow shift
            self._schedulers[id(pipe)] = pipe.scheduler
            self._shift_schedule(pipe)
        return pipe

    def _shift_schedule(self, pipe: Any) -> None:
        """Give `pipe` the model's own scheduler, or (`settings.flow_shift`) a new one rebuilt with
        that static shift by the adapter (`ModelAdapter.scheduler_with_shift`), saying so once."""
        own = self._schedulers[id(pipe)]
        shift = self.settings.flow_shift
        pipe.scheduler = own if shift is None else self.model.scheduler_with_shift(own, shift)
        if shift is not None:
            was = ", ".join(f"{k}={v:g}" for k, v in own.config.items()
                            if type(v) in (int, float) and pipe.scheduler.config.get(k) != v)  # fmt: skip
            self.log(f"flow shift {shift:g} (--flow-shift / infer.flow_shift): {type(own).__name__} rebuilt"
                     + (f"; the model's own config: {was}" if was else " (the model's own value)"))  # fmt: skip

    def task_of(self, request: VideoRequest) -> str:
        return task_of_request(self.model, self.settings.model, request)

    def _task_inputs(self, task: str, request: VideoRequest) -> dict[str, Any]:
        if task == "t2v":
            return {}
        start = load_image(request.image, "start image")
        end = load_image(request.end_image, "end image") if request.end_image else None
        return self.model.pipeline_inputs(task, start, end, self.settings.video_length, self.settings.sample_size)

    def generate(self, request: VideoRequest) -> np.ndarray:
        """One video as uint8 frames [F, H, W, 3] (what is written to files and hashed)."""
        frames = self.generate_float(request)
        return (frames * 255).round().to(torch.uint8).numpy()

    def _step_callback(self, bar: Any, total: int) -> Callable:
        """diffusers' `callback_on_step_end`: advance the progress bar and tell `on_step`."""

        def callback(_pipe: Any, step: int, _t: Any, tensors: dict) -> dict:
            bar.update(1)
            if self.on_step is not None:
                self.on_step(step + 1, total)
            return tensors

        return callback

    @torch.no_grad()
    def generate_float(self, request: VideoRequest) -> torch.Tensor:
        """One video as float32 frames [F, H, W, 3] in [0, 1], before 8-bit rounding."""
        if not request.prompt.strip():
            raise UfoError("the prompt is empty; give --prompt TEXT (or a prompts file)")
        s = self.settings
        height, width = s.sample_size
        task = self.task_of(request)
        kwargs = {**self.model.pipeline_defaults(task, steps=s.num_inference_steps, guidance_scale=s.guidance_scale,
                                                 fps=s.fps), **self._task_inputs(task, request)}
        pipe = self.pipeline(task)
        # seeded on the CPU so a seed gives the same noise on every device
        generator = torch.Generator(device="cpu").manual_seed(int(request.seed))
        from tqdm.auto import tqdm

        bar = tqdm(total=s.num_inference_steps, desc=self.progress_label, unit="step", leave=False,
                   disable=self.progress_label is None, dynamic_ncols=True, mininterval=0)  # fmt: skip
        with self.cache.session() if self.cache else nullcontext(), bar:
            result = pipe(
                callback_on_step_end=self._step_callback(bar, s.num_inference_steps),
                prompt=request.prompt,
                negative_prompt=self.model.pipeline_negative_prompt(request.negative_prompt),
                num_frames=s.video_length,
                height=height,
                width=width,
                num_inference_steps=s.num_inference_steps,
                guidance_scale=s.guidance_scale,
                generator=generator,
                output_type="pt",
                **kwargs,
            )
        if self.cache:
            self.log(self.cache.summary())
        frames = result.frames[0]  # [F, 3, H, W] in [0, 1]
        if not torch.isfinite(frames).all():
            raise UfoError(nonfinite_help(s))
        return frames.permute(0, 2, 3, 1).float().clamp(0, 1).cpu()


def check_flow_shift(shell: Any, shift: float) -> None:
    """Before the weights load: would the model's scheduler (built from its folder's config) take a
    static flow shift? The adapter's refusal is raised here; a folder whose scheduler cannot be
    built from its config alone is checked after loading instead (`VideoGenerator.pipeline`)."""
    import diffusers

    from ufo_video.models.timestep_grid import scheduler_config

    try:
        cfg = scheduler_config(shell)
        scheduler = getattr(diffusers, str(cfg.get("_class_name")))
        scheduler = scheduler.from_config(cfg)
    except (UfoError, OSError, ValueError, TypeError, AttributeError):  # no config to build it from: checked once loaded
        return
    shell.scheduler_with_shift(scheduler, shift)


def nonfinite_help(s: GenerationSettings) -> str:
    """What to try when the frames came out NaN/inf: only the causes that fit these settings (the
    LoRAs were checked finite before loading; fp16 overflows; very few steps can divide by zero in a
    shifted schedule)."""
    tries = []
    if s.weight_dtype == "fp16":
        tries.append("weight_dtype=bf16 or fp32 instead of fp16")
    if s.num_inference_steps < 3:
        tries.append(f"more steps ({s.num_inference_steps} is below what some schedulers handle)")
    tries.append("`ufo-video model check` on the model folder")
    return f"the model produced NaN/inf frames; try: {'; '.join(tries)}"
