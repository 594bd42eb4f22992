"""Inference cases: LoRA cost in a denoise step, changing a LoRA weight, and the step cache.

A denoise step is one transformer call as the pipelines make it (classifier-free guidance
batched: batch 2) at the preset's inference size, on latents, the model's text-to-video conditioning and
text embeddings computed once. The base side is a separately loaded transformer without any
PEFT wrapper, so the LoRA sides pay for everything a LoRA adds.

- lora_unfused: the LoRA attached through PEFT (`load_loras`, fuse=False) / base (<= 1.10).
- lora_fused: the same LoRA merged (`fuse=True`) / base (<= 1.02): should cost nothing.
- weight_change: `set_lora_weights` on the unfused model / `load_model` of the whole model
  (<= 0.05): trying another weight must not cost a reload. The fused model's re-weighting
  (unfuse, refuse) is in `details`.
- step_cache: a whole generation (`VideoGenerator`) with the first-block cache / without, plus
  how far the output moved (max and mean absolute difference of the [0, 1] frames). With
  random weights the cache may skip few steps: `details` says how many.
"""

from __future__ import annotations

import torch

from ufo_video.bench.measure import interleave, peak_memory
from ufo_video.bench.results import CaseResult, Target
from ufo_video.bench.workspace import Workspace

LORA_WEIGHT = 0.15


def _dtype(ws: Workspace) -> torch.dtype:
    return torch.bfloat16 if ws.device.type == "cuda" else torch.float32


def _load(ws: Workspace, components=("transformer",)):
    from ufo_video.models.registry import load_model

    model = load_model(ws.model_dir, dtype=_dtype(ws), components=components)
    model.transformer.to(ws.device).eval()
    return model


def _lora_file(ws: Workspace):
    """A random LoRA of the preset's rank on every Linear (the UFO targets), saved as a file."""
    if "lora_file" in ws._cache:
        return ws._cache["lora_file"]
    from ufo_video.config import LoraSection
    from ufo_video.lora.formats import save_lora
    from ufo_video.lora.inject import add_lora

    model = _load(ws)
    rank = ws.preset.lora_rank
    add_lora(model, LoraSection(rank=rank, network_alpha=rank), adapter_name="bench")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    path = save_lora(ws.root / "bench-lora.safetensors", model, "bench", {})
    ws._cache["lora_file"] = path
    return path


def _step_inputs(ws: Workspace, model):
    """Batch-2 (guidance) inputs of one denoise step at the inference size."""
    h, w, f = ws.preset.infer_size
    latent = model.transformer.config.out_channels
    gen = torch.Generator().manual_seed(0)
    frames = model.latent_frames(f)
    shape = (2, latent, frames, h // 8, w // 8)
    dt = _dtype(ws)
    noisy = torch.randn(shape, generator=gen).to(ws.device, dt)
    text = model.random_text(2, 256, gen, ws.device, dt)
    cond = model.t2v_conditioning(noisy)  # what text-to-video feeds the transformer
    t = torch.full((2,), 500.0, device=ws.device, dtype=dt)
    return noisy, t, text, cond


def _denoise(model, inputs):
    @torch.no_grad()
    def step():
        return model.predict(*inputs[:3], inputs[3])

    return step


def _models(ws: Workspace):
    if "infer_models" not in ws._cache:
        from ufo_video.lora.apply import load_loras

        path = _lora_file(ws)
        base, unfused, fused = _load(ws), _load(ws), _load(ws)
        names = load_loras(unfused, [(path, LORA_WEIGHT)], fuse=False)
        load_loras(fused, [(path, LORA_WEIGHT)], fuse=True)
        ws._cache["infer_models"] = (base, unfused, fused, names)
    return ws._cache["infer_models"]


def _lora_case(ws: Workspace, fused: bool) -> CaseResult:
    base, unfused, fused_model, _ = _models(ws)
    other = fused_model if fused else unfused
    inputs = _step_inputs(ws, base)
    a, b = _denoise(base, inputs), _denoise(other, inputs)
    timing = interleave(a, b, ws.rounds, ws.device, inner=3, warmup=ws.warmup)
    peak_a, out_a = peak_memory(a, ws.device)
    peak_b, out_b = peak_memory(b, ws.device)
    h, w, f = ws.preset.infer_size
    kind = "fused" if fused else "unfused"
    return CaseResult.from_timing(
        f"lora_{kind}", f"denoise step ({f}x{h}x{w}, guidance batch 2) with a rank-{ws.preset.lora_rank} LoRA {kind} "
        "vs the base transformer", "base step", f"{kind} LoRA step", timing, Target("<=", 1.02 if fused else 1.10),
        peak_bytes_a=peak_a, peak_bytes_b=peak_b,
        details={"lora_weight": LORA_WEIGHT, "output_max_abs_diff_vs_base": float((out_a - out_b).abs().max())},
    )  # fmt: skip


def case_lora_fused(ws: Workspace) -> CaseResult:
    return _lora_case(ws, fused=True)


def case_lora_unfused(ws: Workspace) -> CaseResult:
    return _lora_case(ws, fused=False)


def case_weight_change(ws: Workspace) -> CaseResult:
    from ufo_video.lora.apply import set_lora_weights
    from ufo_video.models.registry import load_model

    _, unfused, fused, names = _models(ws)
    weights = iter([0.1, 0.2] * 1000)

    def change(model):
        return lambda: set_lora_weights(model, {names[0]: next(weights)})

    def load():
        return load_model(ws.model_dir, dtype=_dtype(ws))

    timing = interleave(load, change(unfused), ws.rounds, ws.device, warmup=ws.warmup)
    fused_timing = interleave(load, change(fused), ws.rounds, ws.device, warmup=ws.warmup)
    peak_a, _ = peak_memory(load, ws.device)
    peak_b, _ = peak_memory(change(unfused), ws.device)
    fr = sorted(fused_timing.ratios)
    return CaseResult.from_timing(
        "weight_change", "set_lora_weights on an attached LoRA vs loading the model (all components)",
        "model load", "LoRA weight change", timing, Target("<=", 0.05), peak_bytes_a=peak_a, peak_bytes_b=peak_b,
        details={"fused_ratio_median": fr[len(fr) // 2], "fused_ratios": fused_timing.ratios},
    )  # fmt: skip


def case_step_cache(ws: Workspace) -> CaseResult:
    from ufo_video.infer.engine import VideoGenerator
    from ufo_video.infer.settings import GenerationSettings, VideoRequest

    h, w, f = ws.preset.infer_size
    logs: list[str] = []

    def generator(cache: str) -> VideoGenerator:
        settings = GenerationSettings(
            model=str(ws.model_dir), sample_size=(h, w), video_length=f, fps=8,
            num_inference_steps=ws.preset.infer_steps, guidance_scale=6.0, memory_mode="model_full_load",
            weight_dtype="bf16" if ws.device.type == "cuda" else "fp32", device=str(ws.device), cache=cache,
        )  # fmt: skip
        return VideoGenerator(settings, log=logs.append)

    plain, cached = generator("none"), generator("first-block")
    request = VideoRequest(prompt="a red ball rolls over a wooden table", seed=43)
    timing = interleave(lambda: plain.generate_float(request), lambda: cached.generate_float(request),
                        ws.rounds, ws.device, warmup=ws.warmup)
    peak_a, out_a = peak_memory(lambda: plain.generate_float(request), ws.device)
    peak_b, out_b = peak_memory(lambda: cached.generate_float(request), ws.device)
    diff = (out_a - out_b).abs()
    result = CaseResult.from_timing(
        "step_cache", f"generation ({f}x{h}x{w}, {ws.preset.infer_steps} steps) with the first-block step cache "
        f"(threshold {cached.cache.threshold:g}) vs without", "no cache", "first-block cache", timing,
        Target("report"), peak_bytes_a=peak_a, peak_bytes_b=peak_b,
        notes=[f"speed-up = 1 / ratio; output difference max {float(diff.max()):.4f}, mean {float(diff.mean()):.5f} "
               f"(frames in [0, 1]); {cached.cache.summary()}"],
        details={"speedup": None, "output_max_abs_diff": float(diff.max()), "output_mean_abs_diff": float(diff.mean()),
                 "skipped_steps": cached.cache.skipped, "transformer_calls": cached.cache.calls,
                 "threshold": cached.cache.threshold},
    )  # fmt: skip
    result.details["speedup"] = 1.0 / result.ratio.median
    return result
