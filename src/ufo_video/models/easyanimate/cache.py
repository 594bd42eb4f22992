"""EasyAnimate InP conditioning for the latent cache: what a clip stores, how a step rebuilds it.

Why two ways. Without start-image noise the inpaint latents of the cached mask kinds are fixed per
clip, so the cache stores them finished (`cond_first`, `cond_first_last`; `cond_all` once per
size) and a step only picks one per sample. With the pipeline's start-image noise
(`add_noise_in_inpaint_model`, `train.start_image_noise = "model"`) the given frames are noised in
pixel space with a fresh draw every step before the VAE encodes them, so a finished tensor would
freeze one draw. The cache then stores the clean given frames instead (`pixels_first_last`: the
first and last frame, [3, 2, H, W], what the cached kinds keep; never a whole clip) and each step
rebuilds the inpaint latents from them through the VAE with the sample's generator, drawing in
the order `easyanimate_masks.build_conditioning` draws when training encodes: the mask kind, the
zero flag, then the noise over the whole clip's shape (so the draws after it, sigma and flow
noise, stay the same too). The all-masked kind stays cached: every pixel is -1 there, and the
pipeline adds no noise to masked pixels.
"""

from __future__ import annotations

import torch

from ufo_video.models.easyanimate import masks

#: the clean given frames of a clip (first and last), [3, 2, H, W] in the model's weight dtype
PIXELS_ITEM = "pixels_first_last"


def clip_items(noisy: bool) -> tuple[str, ...]:
    """Per-clip cache items of an InP model in "inpaint" mode."""
    return (PIXELS_ITEM,) if noisy else tuple(masks.CACHE_ITEMS.values())


def encode_items(model, pixels: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The named items of ONE clip [1, 3, F, H, W], without the batch dimension."""
    _, _, f, h, w = pixels.shape
    out = {}
    for kind, item in masks.CACHE_ITEMS.items():
        if item in names:
            mask = masks.fixed_mask(kind, f, h, w)[None].to(pixels.device, pixels.dtype)
            out[item] = model.inpaint_conditioning(pixels, mask)[0]
    if PIXELS_ITEM in names:
        out[PIXELS_ITEM] = pixels[0][:, [0, f - 1]].clone()
    return out


def encode_shared(model, item: str, frames: int, height: int, width: int) -> torch.Tensor:
    """The all-masked conditioning: every pixel becomes -1 before encoding, so the pixels given
    (zeros here) do not matter and one tensor per clip size serves every clip."""
    if item != masks.SHARED_ITEM:
        raise KeyError(item)
    assert model.vae is not None, "VAE not loaded"
    pixels = torch.zeros(1, 3, frames, height, width, device=model.vae.device, dtype=model.vae.dtype)
    mask = masks.fixed_mask("all", frames, height, width)[None].to(pixels.device, pixels.dtype)
    return model.inpaint_conditioning(pixels, mask)[0]


def conditioning(
    model, items: dict[str, torch.Tensor], generators: list[torch.Generator], noisy: bool,
    pixel_shape: tuple[int, int, int] | None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The named tensors of "inpaint" mode from a cached batch (`items`: item name -> [B, ...]):
    the finished tensors picked per sample, or (`noisy`) rebuilt with fresh start-image noise."""
    if not noisy:
        by_kind = {"all": items[masks.SHARED_ITEM], **{k: items[i] for k, i in masks.CACHE_ITEMS.items()}}
        cond, kinds = masks.cached_conditioning(by_kind, generators)
        return {"inpaint_latents": cond}, kinds
    if PIXELS_ITEM not in items or pixel_shape is None:
        raise ValueError(f"train.start_image_noise='model' on a cached batch needs its '{PIXELS_ITEM}' item and "
                         "the clip's pixel shape (the cached loader gives both)")
    cond, kinds = noisy_conditioning(model, items[masks.SHARED_ITEM], items[PIXELS_ITEM], pixel_shape[0], generators)
    return {"inpaint_latents": cond}, kinds


def clip_from_given(given: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, 3, F, H, W] pixels with the stored first and last frames in place and -1 between: the
    value every masked pixel gets before encoding, so the masked video equals the real clip's."""
    b, c, _, h, w = given.shape
    clip = given.new_full((b, c, frames, h, w), -1.0)
    clip[:, :, 0] = given[:, :, 0]
    clip[:, :, frames - 1] = given[:, :, 1]  # one frame: first and last are the same frame
    return clip


def noisy_conditioning(
    model, cond_all: torch.Tensor, given: torch.Tensor, frames: int, generators: list[torch.Generator]
) -> tuple[torch.Tensor, list[str]]:
    """Inpaint latents [B, C+1, f, h, w] of a cached batch with fresh start-image noise (module doc):
    `cond_all` the cached all-masked conditioning [B, ...], `given` the stored frames [B, 3, 2, H, W]."""
    kinds = [masks.choose_kind(g, masks.CACHED_MASK_KINDS) for g in generators]
    zero = [masks.draw_zero(k, g) for k, g in zip(kinds, generators)]
    _, c, _, h, w = given.shape
    noise = [masks.draw_start_image_noise((c, frames, h, w), g) for g in generators]
    device = model.vae.device
    rows: list[torch.Tensor | None] = [cond_all[b].to(device) if k == "all" else None for b, k in enumerate(kinds)]
    for kind in masks.CACHE_ITEMS:
        picked = [b for b, k in enumerate(kinds) if k == kind]
        if not picked:
            continue
        pixels = clip_from_given(given[picked].to(device), frames)
        mask = masks.fixed_mask(kind, frames, h, w)[None].expand(len(picked), -1, -1, -1, -1).to(device, pixels.dtype)
        cond = model.inpaint_conditioning(pixels, mask, torch.stack([noise[b] for b in picked]))
        for j, b in enumerate(picked):
            rows[b] = cond[j]
    out = torch.stack(rows)
    keep = torch.tensor([0.0 if z else 1.0 for z in zero], dtype=out.dtype, device=out.device)
    return out * keep.view(-1, *([1] * (out.ndim - 1))), kinds
