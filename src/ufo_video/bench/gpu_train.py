"""One LoRA training case of the GPU suite: the trainer's step on a real-size random model.

The step is the trainer's recipe on random latents and random text embeddings (no VAE, no text
encoder, no video decoding): a noise level and noise per sample from `train.objective`
(uniform sigma grid of the reference), the transformer's flow prediction through the family
adapter, `flow_loss` (MSE in fp32), backward with gradient checkpointing, gradient clipping
and AdamW with the trainer's defaults, all LoRA weights fp32 on a frozen bf16 (or fp8-stored)
base, the forward under bf16 autocast as the trainer's `accelerator.prepare` (mixed_precision
bf16, the default) runs it: the LoRA branch computes in bf16 from its fp32 weights. Reported:
median seconds per step after the warm-up, the peak of allocated accelerator memory over the
steps (weights, LoRA, optimizer state and activations), FLOP counts and MFU.

"The largest size that fits": an item lists sizes largest first; each is tried with one
warm-up step and the first that does not run out of memory is measured. The sizes that did
not fit are reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from ufo_video.bench import gpu_flops
from ufo_video.bench.gpu_models import BuiltModel, free, predict, step_inputs
from ufo_video.bench.gpu_plan import GpuPreset, Size, TrainItem, size_label

# The trainer's defaults (config.TrainSection: learning_rate, adam_*, max_grad_norm; a test
# checks they agree). Literal here because the config layer needs pydantic, absent on the GPU.
ADAMW = {"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 5e-2, "eps": 1e-10}
MAX_GRAD_NORM = 0.05
GB = 1e9


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: BuiltModel, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
               size: Size, device: torch.device, dtype: torch.dtype):
    from ufo_video.train.objective import flow_loss, noise_batch, sample_generator

    inputs = step_inputs(model, size, batch=1, device=device, dtype=dtype)
    grid = model.adapter.training_timesteps()  # the entry's own scheduler config (its configs folder)
    counter = [0]

    def step() -> float:
        gen = sample_generator(0, 0, counter[0], 0)
        counter[0] += 1
        batch = noise_batch(inputs.latents, [gen], "uniform", grid=grid)
        with torch.autocast(device.type, dtype=dtype):  # what accelerate's mixed_precision=bf16 wraps forward in
            pred = predict(model, batch.noisy, batch.timesteps, inputs)
        loss = flow_loss(pred, batch.target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, inputs


def timed_steps(step: Callable[[], float], preset: GpuPreset, device: torch.device, deadline: float,
                clock: Callable[[], float], warmup: int | None = None) -> tuple[list[float], list[float]]:
    """(seconds of each timed step, every loss): `warmup` untimed steps (the preset's by default),
    then up to `timed_steps` timed ones, at least one, stopping at `deadline`."""
    import time

    warmup = preset.warmup_steps if warmup is None else warmup
    losses = [step() for _ in range(warmup)]
    times: list[float] = []
    while len(times) < preset.timed_steps and (not times or clock() < deadline):
        _sync(device)
        t0 = time.perf_counter()
        losses.append(step())  # float(loss) synchronises
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times, losses


def run_train_case(model: BuiltModel, params: list[torch.nn.Parameter], item: TrainItem, preset: GpuPreset,
                   device: torch.device, dtype: torch.dtype, peak_flops: float, deadline: float,
                   clock: Callable[[], float]) -> dict:
    """Measure one training item; returns the metrics dict (raises OOM when no size fits)."""
    transformer = model.transformer
    transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = torch.optim.AdamW(params, **ADAMW)
    did_not_fit: list[str] = []
    measured: Size | None = None
    losses: list[float] = []
    for size in item.sizes:
        oom = False
        try:
            step, inputs = make_step(model, params, optimizer, size, device, dtype)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            losses.append(step())  # the first warm-up step also proves the size fits
            _sync(device)
            measured = size
        except torch.cuda.OutOfMemoryError:
            oom = True
        if not oom:
            break
        optimizer.zero_grad(set_to_none=True)
        did_not_fit.append(size_label(size))
        free(device)  # outside the except block: its traceback no longer holds the tensors
    if measured is None:
        raise torch.cuda.OutOfMemoryError(f"out of memory at every size tried: {', '.join(did_not_fit)}")

    times, more = timed_steps(step, preset, device, deadline, clock, warmup=preset.warmup_steps - 1)
    losses += more
    peak = torch.cuda.max_memory_allocated(device) / GB if device.type == "cuda" else "n/a on cpu"

    transformer.eval()
    counted = gpu_flops.count_forward(
        lambda: predict(model, inputs.latents, torch.full((1,), 500.0, device=device, dtype=dtype), inputs))
    transformer.train()
    flops_step = gpu_flops.TRAIN_FACTOR * counted.total
    tokens = inputs.video_tokens + inputs.text_tokens
    nominal = 6.0 * model.params * tokens
    s_step = statistics.median(times)
    finite = all(v == v and abs(v) != float("inf") for v in losses)
    return {
        "size": size_label(measured),
        "did_not_fit": did_not_fit,
        "s_per_step": s_step,
        "step_seconds": times,
        "timed_steps": len(times),
        "warmup_steps": preset.warmup_steps,
        "peak_gb": peak,
        "video_tokens": inputs.video_tokens,
        "text_tokens": inputs.text_tokens,
        "flop_per_step": flops_step,
        "forward_flop_by_kind": counted.by_kind,
        "mfu": gpu_flops.mfu(flops_step, s_step, peak_flops),
        "nominal_flop_per_step": nominal,
        "nominal_mfu": gpu_flops.mfu(nominal, s_step, peak_flops),
        "lora_params": sum(p.numel() for p in params),
        "loss_finite": finite,
        "last_loss": losses[-1],
    }
