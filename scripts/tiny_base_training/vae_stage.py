"""Stage 1 of the tiny base: a magvit VAE whose weights are *constructed*, not trained.

Two CPU attempts to train a tiny `AutoencoderKLMagvit` from scratch failed (docs/tiny-base-model.md:
after thousands of steps the reconstructions were still worse than each clip's mean colour and
never moved). So the VAE is built by hand inside the real class and config, as a fixed, exactly
understood autoencoder:

- encoder: latent frame k = frame 2k (causal, 2x temporal), each latent pixel = the mean of a
  4x4 pixel block; channels = R, G, B and their mean (4 latent channels);
- decoder: nearest 4x up-sampling; output frame 2k = latent frame k and frame 2k-1 = the mean of
  latent frames k-1 and k (the causal `conv_out` blends the two, so motion stays smooth).

How the block structure is bent into that map:

- every residual block's second convolution is zero, so a block is its (identity) shortcut;
- the spatial down/up-sampling convolutions average a 2x2 block / copy the centre tap;
- the network carries 16 channels in 4 GroupNorm groups, each group holding (s, -s, K, -K) for
  one signal s. A group's mean is then exactly 0 and its variance (E[s^2] + K^2) / 2 is ~K^2 / 2
  for K = 100 (signal-dependence < 5e-5), so the output GroupNorm is a fixed linear scale; and
  silu(x) - silu(-x) = x exactly, so the final SiLU is undone by reading s as the difference of
  the pair.

The transformer (stage 2) therefore learns on latents that are a 16x16 low-resolution copy of the
clip: all the content and all the motion are in the latents, which is what a diffusion model on
top needs. `check_vae` measures how faithful it is on fresh clips.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import AutoencoderKLMagvit

from ufo_video.eval.metrics import evaluate_frames
from ufo_video.media_write import to_uint8_frames
from ufo_video import scenes

#: 3 blocks: 4x spatial and 2x temporal compression (diffusers: 2^(blocks-1), 2^(blocks-2))
BLOCKS = [16, 16, 16]
LATENT = 4
GROUPS = 4
CONSTANT = 100.0
LOGVAR = -14.0  # posterior std ~1e-3: a (nearly) deterministic autoencoder


def vae_config() -> dict:
    return dict(
        block_out_channels=list(BLOCKS),
        down_block_types=["SpatialDownBlock3D"] + ["SpatialTemporalDownBlock3D"] * (len(BLOCKS) - 1),
        up_block_types=["SpatialUpBlock3D"] + ["SpatialTemporalUpBlock3D"] * (len(BLOCKS) - 1),
        latent_channels=LATENT,
        layers_per_block=1,
        norm_num_groups=GROUPS,
        spatial_group_norm=False,
    )


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """P [16, 4]: signal j -> channels 4j (+s) and 4j+1 (-s); c [16]: +K at 4j+2, -K at 4j+3."""
    p = torch.zeros(4 * LATENT, LATENT)
    c = torch.zeros(4 * LATENT)
    for j in range(LATENT):
        p[4 * j, j], p[4 * j + 1, j] = 1.0, -1.0
        c[4 * j + 2], c[4 * j + 3] = CONSTANT, -CONSTANT
    return p, c


def _set_pointwise(conv: torch.nn.Conv3d, matrix: torch.Tensor, bias: torch.Tensor | None = None, taps=None) -> None:
    """Weights of a (causal) conv = `matrix` at the centre spatial tap, spread over the temporal
    taps `taps` (default: the last, i.e. the current frame); everything else zero."""
    kt, kh, kw = conv.weight.shape[2:]
    w = torch.zeros_like(conv.weight)
    taps = taps if taps is not None else {kt - 1: 1.0}
    for t, share in taps.items():
        w[:, :, t, kh // 2, kw // 2] = share * matrix
    conv.weight.data.copy_(w)
    conv.bias.data.copy_(bias if bias is not None else torch.zeros_like(conv.bias))


def _identity_residuals(module: torch.nn.Module) -> None:
    from diffusers.models.autoencoders.autoencoder_kl_magvit import EasyAnimateResidualBlock3D

    for block in module.modules():
        if isinstance(block, EasyAnimateResidualBlock3D):
            assert isinstance(block.shortcut, torch.nn.Identity), "constructed VAE needs equal block widths"
            block.conv2.weight.data.zero_()
            block.conv2.bias.data.zero_()


def build_vae() -> AutoencoderKLMagvit:
    """The constructed VAE (see the module docstring); `scaling_factor` still to be calibrated."""
    from diffusers.models.autoencoders.autoencoder_kl_magvit import EasyAnimateDownsampler3D, EasyAnimateUpsampler3D

    torch.manual_seed(0)  # the unused (zeroed-out) branches' weights are saved too: keep them fixed
    vae = AutoencoderKLMagvit(**vae_config())
    width = 4 * LATENT
    assert BLOCKS == [width] * len(BLOCKS)
    p, c = _pairs()
    eye = torch.eye(width)
    rgb_to_signals = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]])
    norm_scale = CONSTANT / math.sqrt(2.0)  # undoes GroupNorm's 1/std (std ~ K / sqrt(2))
    diff = torch.zeros(LATENT, width)  # signal j = channel 4j - channel 4j+1
    for j in range(LATENT):
        diff[j, 4 * j], diff[j, 4 * j + 1] = 1.0, -1.0
    with torch.no_grad():
        for coder in (vae.encoder, vae.decoder):
            _identity_residuals(coder)
            coder.conv_norm_out.weight.data.fill_(1.0)
            coder.conv_norm_out.bias.data.zero_()
        # encoder
        _set_pointwise(vae.encoder.conv_in, p @ rgb_to_signals, c)
        for m in vae.encoder.modules():
            if isinstance(m, EasyAnimateDownsampler3D):  # mean of the 2x2 block at the current frame
                w = torch.zeros_like(m.conv.weight)
                w[:, :, -1, :2, :2] = 0.25 * eye[:, :, None, None]
                m.conv.weight.data.copy_(w)
                m.conv.bias.data.zero_()
        mean_rows = norm_scale * diff
        logvar_rows = torch.zeros(LATENT, width)
        _set_pointwise(
            vae.encoder.conv_out,
            torch.cat([mean_rows, logvar_rows]),
            torch.cat([torch.zeros(LATENT), torch.full((LATENT,), LOGVAR)]),
        )
        _set_pointwise(vae.quant_conv, torch.eye(2 * LATENT))
        # decoder
        _set_pointwise(vae.post_quant_conv, torch.eye(LATENT))
        _set_pointwise(vae.decoder.conv_in, p, c)
        for m in vae.decoder.modules():
            if isinstance(m, EasyAnimateUpsampler3D):
                _set_pointwise(m.conv, eye)
        # output frame 2k-1 = mean of latent frames k-1 and k (the causal window holds both)
        _set_pointwise(vae.decoder.conv_out, norm_scale * diff[:3], taps={1: 0.5, 2: 0.5})
    return vae.eval()


@torch.no_grad()
def calibrate_scaling(vae: AutoencoderKLMagvit, *, frames: int, size: int, seed: int, count: int = 32) -> float:
    """Set and return `scaling_factor` = 1 / std of the latent means over fresh clips."""
    rng = np.random.default_rng(seed + 1)
    clips, _ = scenes.make_clips(rng, count, frames, size)
    z = torch.cat([vae.encode(torch.from_numpy(clips[i : i + 8])).latent_dist.mode() for i in range(0, count, 8)])
    factor = float(1.0 / z.std())
    vae.register_to_config(scaling_factor=factor)
    return factor


def _flow_px(video: torch.Tensor) -> float:
    """Mean optical-flow magnitude of one clip [3, F, H, W] in [-1, 1]."""
    return float(evaluate_frames(to_uint8_frames(video.transpose(0, 1) * 0.5 + 0.5))["flow_px"])


@torch.no_grad()
def check_vae(vae: AutoencoderKLMagvit, *, frames: int, size: int, seed: int, count: int = 8) -> dict[str, float]:
    """Reconstruction quality on fresh clips: L1 against the mean-colour baseline (each clip
    predicted by its own mean colour) and the optical-flow magnitude of inputs vs reconstructions
    (a VAE that loses motion reconstructs flow ~0)."""
    rng = np.random.default_rng(seed + 2)
    x = torch.from_numpy(scenes.make_clips(rng, count, frames, size)[0])
    rec = torch.cat([vae.decode(vae.encode(x[i : i + 1]).latent_dist.mode()).sample.clamp(-1, 1) for i in range(count)])
    return {
        "l1": float((rec - x).abs().mean()),
        "mean_colour_l1": float((x - x.mean(dim=(2, 3, 4), keepdim=True)).abs().mean()),
        "flow_px_input": float(np.mean([_flow_px(v) for v in x])),
        "flow_px_reconstruction": float(np.mean([_flow_px(v) for v in rec])),
    }
