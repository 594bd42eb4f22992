"""One micro-batch of the objective: encode, mask, noise, predict, loss.

Per-sample randomness (mask, sigma, noise) comes from a generator seeded by (seed, epoch, batch
position, global slot) so a slot is trained identically on 1 or N processes and after a resume.
"""

from __future__ import annotations

import torch

from ufo_video.train import masks, objective
from ufo_video.train.setup import TrainRun, on_device


@torch.no_grad()
def encode_batch(run: TrainRun, batch: dict, position: int):
    """Text embeddings, clean latents and (InP) inpaint conditioning of a batch, without grad."""
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
    cond = None
    with on_device(model.vae, device, low_vram):
        latents = model.encode_video(pixels).float()
        if model.is_inpaint and cfg.train.train_mode == "inpaint":
            cond, kinds = masks.build_conditioning(model, pixels, generators)
            run.extra["mask_kinds"] = kinds
    if model.is_inpaint and cond is None:
        cond = masks.zero_conditioning(model, latents)  # train_mode normal on an InP model
    return text, latents, cond, generators


def _from_cache(run: TrainRun, batch: dict, generators: list[torch.Generator]):
    """Text embeddings, latents and conditioning of a cached batch (nothing is encoded)."""
    from ufo_video.models.base import TextEmbeds

    model, device = run.model, run.accelerator.device
    text = TextEmbeds(batch["text_embeds"], batch["text_mask"]).to(device)
    latents = batch["latents"].to(device).float()
    cond = None
    if model.is_inpaint and run.cfg.train.train_mode == "inpaint":
        cond, kinds = masks.cached_conditioning(batch, generators)
        cond = cond.to(device)
        run.extra["mask_kinds"] = kinds
    elif model.is_inpaint:
        cond = masks.zero_conditioning(model, latents)
    return text, latents, cond


def batch_loss(run: TrainRun, batch: dict, position: int) -> torch.Tensor:
    """The flow-matching loss of one micro-batch (graph attached to the LoRA parameters);
    `position` is the batch's index in its epoch."""
    t = run.cfg.train
    text, latents, cond, generators = encode_batch(run, batch, position)
    noised = objective.noise_batch(
        latents, generators, t.weighting_scheme, logit_mean=t.logit_mean, logit_std=t.logit_std, shift=t.timestep_shift
    )
    dtype = run.weight_dtype
    with run.training_forward():
        pred = run.model.predict(
            noised.noisy.to(dtype),
            noised.timesteps.to(dtype),
            text.to(text.embeds.device, dtype),
            inpaint_latents=None if cond is None else cond.to(dtype),
        )
    return objective.flow_loss(pred, noised.target)
