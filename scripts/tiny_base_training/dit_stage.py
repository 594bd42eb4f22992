"""Stage 2 of the tiny base: the InP transformer, trained from scratch like EasyAnimate V5.1 InP.

The objective is the repository's own (`train.objective`: uniform sigma grid, x_t, velocity
target, MSE) and the conditioning is built by the model adapter (`inpaint_conditioning`) from
`models.easyanimate.masks` masks, restricted to the two modes the demo uses:

- text-to-video: the ``all`` mask; its conditioning is zeroed with `masks.ZERO_CONDITIONING_P`
  (exactly what the inpaint pipeline feeds at t2v inference), else the latents of the all-masked
  video;
- image-to-video: the ``first`` mask (frame 0 kept, the rest generated).

The VAE and the random text encoder are frozen, so latents, conditionings and text embeddings of
a fixed pool of clips are computed once; each step then draws clips, modes, sigmas and noise from
generators seeded by (seed, step, slot). Captions are dropped (empty prompt) with p = 0.1 so
classifier-free guidance works. An EMA of the weights is what gets shipped.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ufo_video.models.easyanimate.transformer import UfoEasyAnimateTransformer
from ufo_video.models.registry import load_model
from ufo_video.models.easyanimate.tiny import tiny_text_encoder, tiny_transformer_config, write_model_folder, write_tokenizer
from ufo_video import scenes
from ufo_video.models.easyanimate import masks
from ufo_video.train import objective

# tiny_text_encoder fixes 2 heads and mrope_section [1, 1, 2] (head_dim 8), so hidden must be 16
TEXT_HIDDEN = 16
TRANSFORMER = dict(num_attention_heads=4, attention_head_dim=16, num_layers=4, mmdit_layers=4, time_embed_dim=64)
I2V_P = 0.5
CAPTION_DROP_P = 0.1
EMA_DECAY = 0.998
LR = 1e-3


def build_components(vae: torch.nn.Module, folder: Path, seed: int) -> None:
    """Write an untrained model folder (trained VAE, random frozen text encoder, random transformer)
    so stage 2 works through the model adapter exactly as training and inference will."""
    torch.manual_seed(seed)
    tok_dir = folder.parent / "tokenizer-src"
    vocab_size = write_tokenizer(tok_dir, scenes.tokenizer_merges())
    text_encoder = tiny_text_encoder(vocab_size, hidden=TEXT_HIDDEN)
    transformer = UfoEasyAnimateTransformer(**tiny_transformer_config("inp", latent=vae.config.latent_channels,
                                                                      text_dim=TEXT_HIDDEN, **TRANSFORMER))  # fmt: skip
    write_model_folder(folder, transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer_dir=tok_dir)


@torch.no_grad()
def encode_pool(model, *, count: int, frames: int, size: int, seed: int, log=print) -> dict:
    """Latents, i2v conditionings and prompts of `count` clips, plus the t2v (all-masked) one and
    the model's training timestep grid."""
    rng = np.random.default_rng(seed + 7)
    latents, i2v, prompts = [], [], []
    first = masks.make_mask("first", frames, size, size, torch.Generator())
    for i in range(0, count, 16):
        clips, sc = scenes.make_clips(rng, min(16, count - i), frames, size)
        px = torch.from_numpy(clips)
        latents.append(model.encode_video(px))
        i2v.append(model.inpaint_conditioning(px, first.expand(px.shape[0], -1, -1, -1, -1)))
        prompts += [s.prompt for s in sc]
        if i % 256 == 0:
            log(f"encoded {i + px.shape[0]}/{count} clips")
    everything = masks.make_mask("all", frames, size, size, torch.Generator())[None]
    t2v = model.inpaint_conditioning(torch.zeros(1, 3, frames, size, size), everything)
    unique = sorted(set(prompts)) + [""]
    embeds = torch.cat([model.encode_text(unique[j : j + 64], "cpu")["embeds"] for j in range(0, len(unique), 64)])
    index = {p: k for k, p in enumerate(unique)}
    return {
        "latents": torch.cat(latents),
        "i2v": torch.cat(i2v),
        "t2v": t2v[0],
        "embeds": embeds,
        "prompt_ids": torch.tensor([index[p] for p in prompts]),
        "empty_id": index[""],
        "grid": model.training_timesteps(),  # the noise levels `uniform` draws (the model's own)
    }


def draw_batch(pool: dict, step: int, batch: int, seed: int):
    """One batch: per slot a generator picks the clip, the mode (t2v/i2v), caption dropout,
    the t2v zeroing, sigma and noise, so the run is reproducible step by step."""
    gens = [objective.sample_generator(seed, 0, step, slot) for slot in range(batch)]
    idx, conds, text_ids = [], [], []
    for g in gens:
        k = int(torch.randint(len(pool["latents"]), (), generator=g))
        idx.append(k)
        if float(torch.rand((), generator=g)) < I2V_P:
            conds.append(pool["i2v"][k])
        else:
            zero = float(torch.rand((), generator=g)) < masks.ZERO_CONDITIONING_P
            conds.append(torch.zeros_like(pool["t2v"]) if zero else pool["t2v"])
        drop = float(torch.rand((), generator=g)) < CAPTION_DROP_P
        text_ids.append(pool["empty_id"] if drop else int(pool["prompt_ids"][k]))
    latents = pool["latents"][idx]
    noised = objective.noise_batch(latents, gens, "uniform", grid=pool["grid"])
    return noised, torch.stack(conds), pool["embeds"][text_ids]


def train_transformer(model, pool: dict, *, steps: int, batch: int, seed: int, log=print) -> tuple[torch.nn.Module, dict]:
    """Full training (every parameter) with AdamW; returns the EMA transformer and final losses."""

    transformer = model.transformer.train()
    for p in transformer.parameters():
        p.requires_grad_(True)
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    opt = torch.optim.AdamW(transformer.parameters(), lr=LR, weight_decay=0.01)
    warm, decay_from = 100, int(0.6 * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (1.0 if s < decay_from else max(0.1, (steps - s) / (steps - decay_from)))
    )
    smooth, start = None, time.perf_counter()
    for step in range(steps):
        noised, cond, embeds = draw_batch(pool, step, batch, seed)
        text = {"embeds": embeds, "mask": torch.ones(embeds.shape[:2], dtype=torch.long)}
        pred = model.predict(noised.noisy, noised.timesteps, text, {"inpaint_latents": cond})
        loss = objective.flow_loss(pred, noised.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), transformer.parameters()):
                pe.lerp_(p, 1 - EMA_DECAY)
        value = loss.item()
        smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
        if step % 100 == 0 or step == steps - 1:
            log(f"dit step {step:5d}/{steps}  loss {smooth:.4f}  lr {sched.get_last_lr()[0]:.2e}  {time.perf_counter() - start:.0f}s")
    return ema, {"flow_loss_smoothed": smooth, "seconds": time.perf_counter() - start}


def _atomic_replace_folder(tmp: Path, out: Path) -> None:
    """Swap the finished folder in with renames (an existing model is kept until the new one is whole)."""
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    old = out.with_name(out.name + ".old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def train_and_write(
    vae, *, out: Path, seed: int, steps: int, batch: int, pool: int, frames: int, size: int, init_from: Path | None = None
) -> dict:
    """Train the transformer (from scratch, or continuing from the transformer of the model folder
    `init_from`, loaded strictly) and write the model folder `out` atomically."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
        untrained = Path(tmp) / "untrained"
        build_components(vae, untrained, seed)
        model = load_model(untrained)
        if init_from is not None:
            start = load_model(init_from, components=("transformer",)).transformer
            model.transformer.load_state_dict(start.state_dict(), strict=True)
            print(f"transformer initialised from {init_from}")
        t0 = time.perf_counter()
        data = encode_pool(model, count=pool, frames=frames, size=size, seed=seed)
        encode_s = time.perf_counter() - t0
        print(f"pool encoded in {encode_s:.0f}s ({len(data['embeds'])} distinct prompts)")
        ema, stats = train_transformer(model, data, steps=steps, batch=batch, seed=seed)
        final = Path(tmp) / "final"
        write_model_folder(final, transformer=ema, vae=model.vae, text_encoder=model.text_encoder,
                           tokenizer_dir=untrained / "tokenizer")  # fmt: skip
        load_model(final)  # strict reload: refuse to ship a folder that does not load
        _atomic_replace_folder(final, out)
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    return {"out": str(out), "encode_seconds": encode_s, "dit": stats, "steps": steps, "batch": batch,
            "pool": pool, "seed": seed, "size_mb": size_mb, "init_from": str(init_from) if init_from else None}  # fmt: skip
