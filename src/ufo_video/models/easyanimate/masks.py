"""EasyAnimate InP training conditioning: random inpaint masks for `train_mode = "inpaint"`.

The InP transformer sees, next to the noisy latents, the VAE latents of a partly masked video and
the mask itself (`EasyAnimateAdapter.inpaint_conditioning`). Training on a family of mask shapes teaches
it every way it is used at inference:

- ``all``        every pixel masked: text-to-video (the InP model's t2v mode)   p = 0.20
- ``first``      first frame kept, the rest generated: image-to-video            p = 0.35
- ``first_last`` first and last frames kept                                      p = 0.15
- ``box``        a random spatial box masked in every frame                      p = 0.15
- ``span``       a random run of frames masked                                   p = 0.15

Mask value 1 = to generate, 0 = given. For an ``all`` sample the conditioning is zeroed 90 % of
the time, because at inference text-to-video passes zeros, not the latents of a black video.
"""

from __future__ import annotations

import torch

MASK_KINDS: tuple[tuple[str, float], ...] = (
    ("all", 0.20),
    ("first", 0.35),
    ("first_last", 0.15),
    ("box", 0.15),
    ("span", 0.15),
)
ZERO_CONDITIONING_P = 0.9


def _randint(low: int, high: int, g: torch.Generator) -> int:
    """Uniform integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (), generator=g).item())


def choose_kind(g: torch.Generator, allowed: tuple[str, ...] | None = None) -> str:
    """Draw a mask kind; `allowed` restricts the family (probabilities renormalised), as the
    latent cache does: it holds the conditioning of the fixed-shape kinds only."""
    kinds = [(k, p) for k, p in MASK_KINDS if allowed is None or k in allowed]
    total = sum(p for _, p in kinds)
    u = float(torch.rand((), generator=g).item()) * total
    acc = 0.0
    for kind, p in kinds:
        acc += p
        if u < acc:
            return kind
    return kinds[-1][0]


def draw_zero(kind: str, g: torch.Generator) -> bool:
    """Whether this sample's conditioning is zeroed (the text-to-video case of an `all` mask)."""
    return kind == "all" and float(torch.rand((), generator=g).item()) < ZERO_CONDITIONING_P


def make_mask(kind: str, frames: int, height: int, width: int, g: torch.Generator) -> torch.Tensor:
    """A [1, F, H, W] float mask of the named shape (1 = to generate)."""
    mask = torch.zeros(1, frames, height, width)
    if kind == "all":
        mask[:] = 1
    elif kind == "first":
        mask[:, 1:] = 1
    elif kind == "first_last":
        mask[:, 1:-1] = 1
        if frames == 1:  # a single frame has nothing between first and last: all given
            mask[:] = 0
    elif kind == "box":
        bh, bw = _randint(max(1, height // 4), height, g), _randint(max(1, width // 4), width, g)
        top, left = _randint(0, height - bh, g), _randint(0, width - bw, g)
        mask[:, :, top : top + bh, left : left + bw] = 1
    elif kind == "span":
        length = _randint(1, frames, g)
        start = _randint(0, frames - length, g)
        mask[:, start : start + length] = 1
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    return mask


def sample_mask(frames: int, height: int, width: int, g: torch.Generator) -> tuple[str, torch.Tensor, bool]:
    """Draw a mask shape and the mask; the bool says whether the conditioning must be zeroed."""
    kind = choose_kind(g)
    mask = make_mask(kind, frames, height, width, g)
    return kind, mask, draw_zero(kind, g)


#: the reference's start-image noise level: sigma = exp(N(-3, 0.5)) per sample (median ~0.05; the
#: pipeline uses a fixed 0.0563 at inference)
NOISE_LOG_MEAN, NOISE_LOG_STD = -3.0, 0.5


def draw_start_image_noise(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """One sample's start-image noise: sigma = exp(N(-3, 0.5)) times standard normal noise, both
    drawn from the sample's generator (the reference's `add_noise_to_reference_video(ratio=None)`)."""
    sigma = torch.exp(torch.randn((), generator=g) * NOISE_LOG_STD + NOISE_LOG_MEAN)
    return torch.randn(shape, generator=g) * sigma


def build_conditioning(
    model, pixels: torch.Tensor, generators: list[torch.Generator], start_image_noise: bool = False
) -> tuple[torch.Tensor, list[str]]:
    """Inpaint latents for a pixel batch [B, 3, F, H, W]: one random mask per sample (drawn from
    that sample's generator), `model.inpaint_conditioning`, zeros where the t2v case applies;
    `start_image_noise` adds the reference's noise to the kept pixels (drawn after the mask)."""
    _, _, frames, height, width = pixels.shape
    drawn = [sample_mask(frames, height, width, g) for g in generators]
    mask = torch.stack([m for _, m, _ in drawn]).to(pixels.device, pixels.dtype)
    noise = None
    if start_image_noise:
        noise = torch.stack([draw_start_image_noise(tuple(pixels.shape[1:]), g) for g in generators])
    cond = model.inpaint_conditioning(pixels, mask, noise)
    keep = torch.tensor([0.0 if zero else 1.0 for _, _, zero in drawn], device=cond.device, dtype=cond.dtype)
    cond = cond * keep.view(-1, *([1] * (cond.ndim - 1)))
    return cond, [kind for kind, _, _ in drawn]


#: the mask kinds the latent cache holds: the deterministic ones (box/span need each draw's pixels)
CACHED_MASK_KINDS = ("all", "first", "first_last")
#: cache item name per cached kind; "all" depends only on the clip size (a video of -1)
CACHE_ITEMS = {"first": "cond_first", "first_last": "cond_first_last"}
SHARED_ITEM = "cond_all"


def fixed_mask(kind: str, frames: int, height: int, width: int) -> torch.Tensor:
    """[1, F, H, W] pixel mask (1 = to generate) of a cached kind (these draw nothing)."""
    if kind not in CACHED_MASK_KINDS:
        raise ValueError(f"mask kind {kind!r} is not cached (cached: {', '.join(CACHED_MASK_KINDS)})")
    return make_mask(kind, frames, height, width, torch.Generator())


def select_conditioning(cond: dict[str, torch.Tensor], kinds: list[str], zero: list[bool] | None = None) -> torch.Tensor:
    """Inpaint latents [B, C+1, f, h, w] from cached tensors: sample b takes ``cond[kinds[b]][b]``,
    multiplied by 0 where ``zero[b]`` (the text-to-video case)."""
    out = torch.stack([cond[k][b] for b, k in enumerate(kinds)])
    if zero is not None:
        keep = torch.tensor([0.0 if z else 1.0 for z in zero], dtype=out.dtype)
        out = out * keep.view(-1, *([1] * (out.ndim - 1)))
    return out


def cached_conditioning(cond: dict[str, torch.Tensor], generators: list[torch.Generator]) -> tuple[torch.Tensor, list[str]]:
    """Inpaint latents from cached tensors (kind -> [B, ...]): each sample draws its mask kind among
    the cached ones from its own generator, so the choice stays random per step."""
    kinds = [choose_kind(g, CACHED_MASK_KINDS) for g in generators]
    zero = [draw_zero(k, g) for k, g in zip(kinds, generators)]
    return select_conditioning(cond, kinds, zero), kinds


def zero_conditioning(in_channels: int, latents: torch.Tensor) -> torch.Tensor:
    """`train_mode = "normal"` on an InP model: the transformer still expects inpaint channels,
    so it gets zeros (mask channel + masked latents), exactly what text-to-video feeds it."""
    channels = in_channels - latents.shape[1]
    return torch.zeros(latents.shape[0], channels, *latents.shape[2:], device=latents.device, dtype=latents.dtype)
