"""Stage 1 of the tiny base: the magvit VAE, trained as an autoencoder on synthetic clips.

The VAE is trained first and then frozen, like a real latent video model: the transformer only
ever sees its latents. Loss = L1 + MSE on pixels + a small KL term (with a tenth of the posterior noise sampled) that keeps the latent space
smooth enough for diffusion. Afterwards `scaling_factor` is set to 1 / std of the latents so the
scaled latents have unit variance, which is what the flow-matching noise schedule assumes.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from diffusers import AutoencoderKLMagvit

from ufo_video.models.tiny import tiny_vae_config
from ufo_video.models.tiny_base_training import scenes

POSTERIOR_NOISE = 0.1


def build_vae(latent: int, block_out: list[int]) -> AutoencoderKLMagvit:
    return AutoencoderKLMagvit(**tiny_vae_config(latent, block_out_channels=block_out, layers_per_block=1, norm_num_groups=4))


def train_vae(
    vae: AutoencoderKLMagvit,
    *,
    steps: int,
    batch: int,
    lr: float,
    kl_weight: float,
    frames: int,
    size: int,
    crop: int,
    seed: int,
    log=print,
) -> dict[str, float]:
    """Train `vae` in place on random `crop`-pixel crops of freshly rendered clips (the VAE is
    convolutional, so crops teach it the same content at a fraction of the cost); returns the
    final smoothed losses."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * (1.0 if s < 0.7 * steps else 0.3))
    vae.train()
    smooth: dict[str, float] = {}
    start = time.perf_counter()
    for step in range(steps):
        clips, _ = scenes.make_clips(rng, batch, frames, size)
        top, left = (int(v) for v in rng.integers(0, size - crop + 1, 2))
        x = torch.from_numpy(np.ascontiguousarray(clips[..., top : top + crop, left : left + crop]))
        posterior = vae.encode(x).latent_dist
        # a mostly deterministic autoencoder: the full posterior noise (std ~1 at init) drowns
        # the signal of so small a VAE within the step budget, so only a tenth of it is sampled
        z = posterior.mean + POSTERIOR_NOISE * posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = (rec - x).pow(2).mean()
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()  # per element
        loss = l1 + mse + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        for k, v in (("l1", l1), ("mse", mse), ("kl", kl)):
            v = v.item()
            smooth[k] = v if k not in smooth else 0.95 * smooth[k] + 0.05 * v
        if step % 50 == 0 or step == steps - 1:
            log(f"vae step {step:5d}/{steps}  l1 {smooth['l1']:.4f}  mse {smooth['mse']:.4f}  kl {smooth['kl']:.3f}  "
                f"{time.perf_counter() - start:.0f}s")  # fmt: skip
    vae.eval()
    return smooth


@torch.no_grad()
def calibrate_scaling(vae: AutoencoderKLMagvit, *, frames: int, size: int, seed: int, count: int = 32) -> float:
    """Set and return `scaling_factor` = 1 / std of the latent means over fresh clips."""
    rng = np.random.default_rng(seed + 1)
    clips, _ = scenes.make_clips(rng, count, frames, size)
    z = torch.cat([vae.encode(torch.from_numpy(clips[i : i + 8])).latent_dist.mode() for i in range(0, count, 8)])
    factor = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=factor)
    return factor
