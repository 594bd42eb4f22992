"""The inference case of the GPU suite at the entry's inference size (real width, not toy width).

A denoising step is one transformer call with classifier-free guidance batched (batch 2), as
the pipelines make it, on random latents and text embeddings. Measured, in this order (the step
cache's hooks stay on the transformer they are applied to, so it comes last):

- unfused_ratio: step with a UFO-sized LoRA attached through PEFT (fp32 LoRA weights, as
  `lora.apply.load_loras` keeps a file's values) / base step (a separately built transformer
  with no PEFT wrapper), interleaved rounds (`measure.interleave`), median of the ratios;
- weight_change_ratio: `lora.apply.set_lora_weights` / a model load. The load is its lower
  bound: the transformer built on meta and filled from a state dict already in host memory,
  then moved to the device (what `models.weights.load_strict` + `.to(device)` do, minus the
  disk read), so the real ratio is smaller still;
- fused_ratio: the LoRA merged (`lora.apply.fuse_loras`) / base step;
- s_per_step without and with the first-block step cache (`infer.cache.StepCache`, the
  entry's threshold) over a short flow-matching Euler loop; with random weights the residuals
  rarely settle, so the skip count is reported, and `cache_all_skipped_s_per_step` (threshold so
  high that every step after the first is skipped) bounds what a trained model can gain.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ufo_video.bench.gpu_models import BuiltModel, build, free, predict, randomise_lora_b, step_inputs
from ufo_video.bench.gpu_models import add_lora as add_bench_lora
from ufo_video.bench.gpu_plan import Entry, GpuPreset, size_label
from ufo_video.bench.measure import interleave
from ufo_video.errors import UfoError

ADAPTER = "ufo"
FORCE_SKIP_THRESHOLD = math.inf  # `diff > inf` is never true, even for an inf or nan diff


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _denoise_loop(model: BuiltModel, inputs, steps: int, guidance: float, device: torch.device) -> Callable[[], float]:
    """A `steps`-step Euler loop of a flow model with batched guidance; returns mean s/step."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1).tolist()

    @torch.no_grad()
    def run() -> float:
        x = inputs.latents[:1].clone()
        _sync(device)
        t0 = time.perf_counter()
        for i in range(steps):
            t = torch.full((2,), sigmas[i] * 1000.0, device=device, dtype=x.dtype)
            uncond, cond = predict(model, torch.cat([x, x]), t, inputs).chunk(2)
            v = uncond + guidance * (cond - uncond)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        _sync(device)
        return (time.perf_counter() - t0) / steps

    return run


def _ratio(a, b, rounds: int, device: torch.device, inner: int = 1) -> dict:
    timing = interleave(a, b, rounds, device, inner=inner, warmup=1)
    ratios = timing.ratios
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "a_s": statistics.median(timing.a_seconds), "b_s": statistics.median(timing.b_seconds)}


def run_infer_case(entry: Entry, adapter_cls: type, folder: Path, preset: GpuPreset, device: torch.device,
                   dtype: torch.dtype, deadline: float, clock: Callable[[], float]) -> dict:
    from types import SimpleNamespace

    from ufo_video.infer.cache import StepCache
    from ufo_video.lora.apply import fuse_loras, set_lora_weights

    plan = entry.infer
    assert plan is not None
    m: dict = {"size": size_label(plan.size), "guidance_batch": 2, "lora_rank": entry.lora_rank,
               "lora_weight": plan.lora_weight, "skipped_parts": []}
    base = build(entry, adapter_cls, folder, device, dtype, seed=0)
    lora = build(entry, adapter_cls, folder, device, dtype, seed=0)
    add_bench_lora(lora, ADAPTER, entry.lora_rank, entry.lora_alpha)
    randomise_lora_b(lora.transformer, ADAPTER)
    lora.transformer.requires_grad_(False)
    set_lora_weights(lora.adapter, {ADAPTER: plan.lora_weight})
    inputs = step_inputs(base, plan.size, batch=2, device=device, dtype=dtype)
    m["video_tokens"], m["text_tokens"] = inputs.video_tokens, inputs.text_tokens
    t = torch.full((2,), 500.0, device=device, dtype=dtype)

    def step(model: BuiltModel):
        return torch.no_grad()(lambda: predict(model, inputs.latents, t, inputs))

    def part(name: str, fn: Callable[[], None]) -> bool:
        """Run one measurement unless the case's time cap is reached; an out-of-memory (e.g. the
        third model copy of the load on an 80 GB card) loses that part only, and so does a feature
        the family refuses (a `UfoError`, e.g. a step cache its blocks cannot take: listed with why)."""
        if clock() >= deadline:
            m["skipped_parts"].append(f"{name}: case time cap reached")
            return False
        oom = False
        try:
            fn()
        except torch.cuda.OutOfMemoryError:
            oom = True
        except UfoError as exc:
            m["skipped_parts"].append(f"{name}: not available ({exc})")
            return False
        if oom:
            m["skipped_parts"].append(f"{name}: out of memory")
            free(device)
        return not oom

    rounds = preset.infer_rounds
    r = _ratio(step(base), step(lora), rounds, device, inner=2)
    m.update(unfused_ratio=r["median"], unfused_ratio_min=r["min"], unfused_ratio_max=r["max"],
             base_step_s=r["a_s"], unfused_step_s=r["b_s"])

    def weight_change() -> None:
        host_state = {k: v.detach().to("cpu", copy=True) for k, v in base.transformer.state_dict().items()}

        def load() -> None:
            fresh = adapter_cls.build_meta(folder)["transformer"]
            fresh.load_state_dict(host_state, assign=True)
            fresh.to(device=device)
            _sync(device)

        weights = iter([0.1, 0.2] * 1000)
        try:
            r = _ratio(load, lambda: set_lora_weights(lora.adapter, {ADAPTER: next(weights)}),
                       max(1, min(3, rounds)), device)
            m.update(weight_change_ratio=r["median"], model_load_lower_bound_s=r["a_s"], weight_change_s=r["b_s"])
        finally:
            set_lora_weights(lora.adapter, {ADAPTER: plan.lora_weight})

    def fused() -> None:
        fuse_loras(SimpleNamespace(transformer=lora.transformer), keep_original=False)
        r = _ratio(step(base), step(lora), rounds, device, inner=2)
        m.update(fused_ratio=r["median"], fused_ratio_min=r["min"], fused_ratio_max=r["max"], fused_step_s=r["b_s"])

    def step_cache() -> None:
        plain = _denoise_loop(base, inputs, preset.infer_steps, plan.guidance, device)
        plain()  # warm-up
        m["uncached_s_per_step"] = statistics.median(plain() for _ in range(2))
        cache = StepCache(base.adapter, plan.cache_threshold)
        with cache.session():
            plain()
        runs = []
        for _ in range(2):
            with cache.session():
                runs.append(plain())
        m.update(cached_s_per_step=statistics.median(runs), cache_threshold=plan.cache_threshold,
                 cache_skipped=cache.skipped, cache_calls=cache.calls, infer_steps=preset.infer_steps)

    def cache_all_skipped() -> None:
        # on the LoRA copy (fused: the base step's cost, see fused_ratio), every step after the first skipped
        forced = StepCache(lora.adapter, FORCE_SKIP_THRESHOLD)
        loop = _denoise_loop(lora, inputs, preset.infer_steps, plan.guidance, device)
        with forced.session():
            loop()
        with forced.session():
            m["cache_all_skipped_s_per_step"] = loop()
        m["cache_all_skipped"] = f"{forced.skipped} of {forced.calls}"
        m["cache_all_skipped_on"] = "fused LoRA copy" if "fused_ratio" in m else "unfused LoRA copy"

    part("weight_change", weight_change)
    free(device)
    part("fused", fused)
    if part("step_cache", step_cache):
        part("cache_all_skipped", cache_all_skipped)
    m["params"] = base.params
    del base, lora, inputs
    free(device)
    return m
