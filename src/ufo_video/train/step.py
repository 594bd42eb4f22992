"""One micro-batch of the objective: encode, condition, noise, predict, loss.

Per-sample randomness (conditioning kind, sigma, noise) comes from a generator seeded by (seed,
epoch, batch position, global slot) so a slot is trained identically on 1 or N processes and after
a resume. What extra inputs the transformer takes is the adapter's business: it returns them as
named tensors (`training_conditioning` / `conditioning_from_cache`) and `predict` consumes them.
"""

from __future__ import annotations

import contextlib

import torch

from ufo_video.models.base import cast_floats
from ufo_video.train import objective
from ufo_video.train.run import TrainRun, on_device


@torch.no_grad()
def encode_batch(run: TrainRun, batch: dict, position: int):
    """Text embeddings, clean latents and the named conditioning of a batch, without grad."""
    cfg, model, device = run.cfg, run.model, run.accelerator.device
    low_vram = cfg.train.low_vram
    first_slot = run.accelerator.process_index * cfg.train.train_batch_size
    generators = [
        objective.sample_generator(cfg.train.seed, run.extra["epoch"], position, first_slot + j)
        for j in range(len(batch["indices"]))
    ]
    if "latents" in batch:  # from the latent/text cache (data.cache_latents)
        return (*_from_cache(run, batch, generators), generators)
    with on_device(model.text_encoder, device, low_vram):
        text = model.encode_text(list(batch["texts"]), device)
    pixels = batch["pixel_values"].to(device=device, dtype=run.weight_dtype)
    with on_device(model.vae, device, low_vram):
        if cfg.train.vae_latents == "sample":
            mean, std = model.encode_video_posterior(pixels)
            latents = objective.sample_posterior(mean.float(), std.float(), generators)
        else:
            latents = model.encode_video(pixels).float()
        cond, kinds = model.training_conditioning(pixels, latents, generators, cfg.train.train_mode,
                                                  start_image_noise=cfg.train.start_image_noise == "model")
    run.extra["mask_kinds"] = kinds
    return text, latents, cond, generators


def _from_cache(run: TrainRun, batch: dict, generators: list[torch.Generator]):
    """Text embeddings, latents and conditioning of a cached batch (nothing is encoded)."""
    model, device = run.model, run.accelerator.device
    text = cast_floats(batch["text"], device)
    latents = batch["latents"].to(device).float()
    if run.cfg.train.vae_latents == "sample":  # the cache holds the posterior's mean and std
        latents = objective.sample_posterior(latents, batch["latents_std"].to(device).float(), generators)
    items = {"latent": latents, **batch["cond"]}
    t = run.cfg.train
    noise = t.start_image_noise == "model"
    with contextlib.ExitStack() as stack:  # what the adapter runs per step (e.g. the VAE), moved in under low_vram
        for name in model.cache_step_components(t.train_mode, start_image_noise=noise):
            stack.enter_context(on_device(_component(model, name), device, t.low_vram))
        cond, kinds = model.conditioning_from_cache(items, generators, t.train_mode, start_image_noise=noise,
                                                    pixel_shape=batch["pixel_shape"])
    run.extra["mask_kinds"] = kinds
    return text, latents, {k: v.to(device) for k, v in cond.items()}


def _component(model, name: str) -> torch.nn.Module:
    module = model.component(name)
    if module is None:
        raise RuntimeError(f"the cached conditioning needs the model's {name}, which setup did not load")
    return module


def batch_loss(run: TrainRun, batch: dict, position: int) -> torch.Tensor:
    """The flow-matching loss of one micro-batch (graph attached to the LoRA parameters);
    `position` is the batch's index in its epoch."""
    t = run.cfg.train
    text, latents, cond, generators = encode_batch(run, batch, position)
    noised = objective.noise_batch(
        latents, generators, t.weighting_scheme, logit_mean=t.logit_mean, logit_std=t.logit_std,
        shift=t.timestep_shift, grid=run.model.training_timesteps(), sigma_range=run.extra["expert"].sigma_range(),
    )  # fmt: skip
    dtype = run.weight_dtype
    with run.training_forward():
        pred = run.model.predict(
            noised.noisy.to(dtype),
            noised.timesteps.to(dtype),
            cast_floats(text, latents.device, dtype),
            {k: v.to(dtype) for k, v in cond.items()},
        )
    return objective.flow_loss(pred, noised.target, run.model.loss_mask(cond, latents))
