"""The flow-matching objective: which noise level to train on, how to noise, what to predict.

Rectified flow: x_t = (1 - sigma) * x0 + sigma * eps, and the transformer predicts the velocity
eps - x0. The transformer takes the timestep on the 0..1000 scale (sigma * 1000).

Sigma sampling ("weighting_scheme"):
- uniform: the reference's recipe on the model's own grid. u ~ U[0, 1), t = grid[int(u * len)],
  sigma = t / 1000, where grid = `ModelAdapter.training_timesteps()`, built from the model's
  scheduler config (each family's adapter states why its grid matches how its model samples: an
  unshifted 1000-step grid for a scheduler that shifts dynamically at sampling time, the grid
  shifted by the scheduler's static shift otherwise). Sigma is never 0.
- logit_normal: sigma = sigmoid(N(logit_mean, logit_std)) (SD3-style, continuous).
- shift: an explicit override whatever the model: the 1000-step *unshifted* grid, then
  sigma' = shift * s / (1 + (shift - 1) * s) with `train.timestep_shift`. On a model with a static
  sampling shift it draws what `uniform` draws when timestep_shift is that shift; a dynamic
  (resolution-dependent) shift is reproduced by no fixed value.

Every random draw takes an explicit generator, so the trainer can seed each sample by its
dataset index: the same sample gets the same noise whether it is trained on one process or
several, and after a resume (see `sample_generator`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ufo_video.models.timestep_grid import shifted_flow_grid

NUM_TRAIN_TIMESTEPS = 1000


def clip_norm_at(step: int, max_grad_norm: float, warmup_steps: int, factor: float) -> float:
    """The gradient-clip threshold of optimizer step `step` (0-based): `factor` x max_grad_norm at
    step 0, tightening linearly to max_grad_norm at `warmup_steps`, constant afterwards (the UFO
    reference's schedule, which keeps early LoRA updates from being clipped to almost nothing)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return max_grad_norm
    return max_grad_norm * (factor + (1.0 - factor) * step / warmup_steps)


def sample_generator(seed: int, epoch: int, batch: int, slot: int) -> torch.Generator:
    """A CPU generator owned by one slot of one global batch of an epoch. The data loader gives
    process i slots [i*B, (i+1)*B) of each global batch, so a slot's draws are the same on one
    process with batch B*N as on N processes with batch B, and after a resume."""
    digest = hashlib.sha256(f"ufo-train:{seed}:{epoch}:{batch}:{slot}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


_UNSHIFTED: torch.Tensor | None = None


def unshifted_grid() -> torch.Tensor:
    """The 1000-step unshifted flow grid {1000, 999, ..., 1} (the `shift` scheme's base)."""
    global _UNSHIFTED
    if _UNSHIFTED is None:
        _UNSHIFTED = shifted_flow_grid(NUM_TRAIN_TIMESTEPS, 1.0)
    return _UNSHIFTED


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow-matching time shift: shift * s / (1 + (shift - 1) * s)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _grid_sigma(grid: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand((), generator=generator)
    index = min(int(u.item() * len(grid)), len(grid) - 1)
    return grid[index] / NUM_TRAIN_TIMESTEPS


def sample_sigma(
    scheme: str,
    generator: torch.Generator,
    *,
    grid: torch.Tensor | None = None,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    shift: float = 3.0,
) -> torch.Tensor:
    """One noise level (a 0-d float32 tensor in (0, 1]) drawn with `generator`; `grid` (the
    model's `training_timesteps()`) is what `uniform` draws from and is required for it."""
    if scheme == "uniform":
        if grid is None:
            raise ValueError("weighting_scheme 'uniform' draws from the model's grid: pass grid=model.training_timesteps()")
        return _grid_sigma(grid, generator)
    if scheme == "shift":
        return shift_sigmas(_grid_sigma(unshifted_grid(), generator), shift)
    if scheme == "logit_normal":
        z = torch.randn((), generator=generator) * logit_std + logit_mean
        return torch.sigmoid(z)
    raise ValueError(f"unknown weighting_scheme {scheme!r}")


def sample_posterior(mean: torch.Tensor, std: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One VAE-posterior sample per clip, `mean + std * eps`, eps drawn from each sample's own
    generator first (before its conditioning kind, sigma and noise), so the cached and uncached
    paths and any process count draw the same latents."""
    eps = torch.stack([torch.randn(mean.shape[1:], generator=g, dtype=torch.float32) for g in generators])
    return mean + std * eps.to(device=mean.device, dtype=mean.dtype)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - sigma) * x0 + sigma * noise, with one sigma per sample ([B])."""
    s = sigma.to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the transformer should predict: the velocity noise - x0."""
    return noise - x0


def timesteps_for(sigma: torch.Tensor) -> torch.Tensor:
    """The transformer's timestep input: sigma on the 0..1000 scale."""
    return sigma * NUM_TRAIN_TIMESTEPS


def flow_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error in float32: over every element, or over those where `mask` (0/1,
    broadcastable to `pred`; the adapter's `loss_mask`) is 1."""
    if mask is None:
        return F.mse_loss(pred.float(), target.float(), reduction="mean")
    weight = mask.to(device=pred.device, dtype=torch.float32).expand_as(pred)
    return ((pred.float() - target.float()).square() * weight).sum() / weight.sum().clamp_min(1.0)


@dataclass
class NoisedBatch:
    """Everything the loss step needs besides the model."""

    noisy: torch.Tensor
    target: torch.Tensor
    sigmas: torch.Tensor
    timesteps: torch.Tensor


def to_range(sigma: torch.Tensor, sigma_range: tuple[float, float]) -> torch.Tensor:
    """Map a noise level drawn over (0, 1] into an expert's range [lo, hi]: lo + (hi - lo) * sigma.
    The full range (0, 1) leaves it unchanged, so single-expert models train as before; one expert
    of a multi-expert model keeps the scheme's shape inside its own range (as peers train each)."""
    lo, hi = sigma_range
    if (lo, hi) == (0.0, 1.0):
        return sigma
    return lo + (hi - lo) * sigma


def noise_batch(
    latents: torch.Tensor,
    generators: list[torch.Generator],
    scheme: str,
    *,
    grid: torch.Tensor,
    sigma_range: tuple[float, float] = (0.0, 1.0),
    **sigma_kwargs,
) -> NoisedBatch:
    """Draw each sample's sigma and noise from its own generator and build x_t and the target.
    `grid`: the model's `training_timesteps()` (required, so no caller silently trains one
    family on another's schedule; only `uniform` reads it)."""
    sigmas = torch.stack([to_range(sample_sigma(scheme, g, grid=grid, **sigma_kwargs), sigma_range) for g in generators])
    noise = torch.stack(
        [torch.randn(latents.shape[1:], generator=g, dtype=torch.float32) for g in generators]
    ).to(device=latents.device, dtype=latents.dtype)
    sigmas = sigmas.to(latents.device)
    return NoisedBatch(
        noisy=add_noise(latents, noise, sigmas),
        target=flow_target(latents, noise),
        sigmas=sigmas,
        timesteps=timesteps_for(sigmas).to(latents.dtype),
    )
