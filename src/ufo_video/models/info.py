"""What a model folder is, read from its configs alone: its layout and variant, its experts and
the sizes and frame counts it takes. Plain data, below the adapter interface (`models/base.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Layout = str  # "diffusers", "original", "single-file", "configs-only" (a family says which it reads)
Variant = str  # the family's own variant names ("inp", "t2v", "i2v", "ti2v", "a14b", ...)
#: generation tasks a model may support; `tasks` of an adapter lists its model's
TASKS = ("t2v", "i2v", "flf2v")


@dataclass(frozen=True)
class Expert:
    """One denoiser of a model: which component holds it and the timesteps (0..1000) it serves.

    Single-transformer models have one expert over [0, 1000]; Wan 2.2 A14B has a high-noise
    `transformer` over [boundary, 1000] and a low-noise `transformer_2` over [0, boundary)."""

    component: str
    t_min: float = 0.0
    t_max: float = 1000.0

    def sigma_range(self) -> tuple[float, float]:
        return self.t_min / 1000.0, self.t_max / 1000.0


@dataclass(frozen=True)
class SizeRules:
    """What sizes and frame counts a model takes, read from its configs (diffusion-pipe keeps these
    rounding rules on the model class; here they come with the model's own VAE and patch).

    Sides must be multiples of `size_multiple` (VAE spatial compression x transformer patch);
    frame counts must be `temporal_factor * k + 1` (causal VAEs encode the first frame alone).
    Buckets: the aspect family is derived from `bucket_base`^2 pixels, and random sides are
    drawn from `side_choices`."""

    spatial_factor: int
    temporal_factor: int
    patch_size: int
    bucket_base: int = 512
    side_choices: tuple[int, ...] = tuple(range(256, 1025, 128))
    vae_name: str = "VAE"

    @property
    def size_multiple(self) -> int:
        return self.spatial_factor * self.patch_size

    def frames_ok(self, n: int) -> bool:
        return n >= 1 and (n - 1) % self.temporal_factor == 0

    def floor_frames(self, n: int) -> int:
        """Largest valid frame count <= n (at least 1)."""
        return max(1, (n - 1) // self.temporal_factor * self.temporal_factor + 1)

    def nearest_frames(self, n: int) -> int:
        """Nearest valid frame count (ties go up)."""
        lower = self.floor_frames(n)
        upper = lower + self.temporal_factor
        return lower if (n - lower) < (upper - n) else upper

    def frame_rule(self) -> str:
        k = self.temporal_factor
        return f"{k}k+1 (the {self.vae_name} compresses time {k}x causally)"

    def size_rule(self) -> str:
        return f"a multiple of {self.size_multiple} ({self.vae_name} {self.spatial_factor}x times patch {self.patch_size})"


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder is, read from its configs alone (no weights)."""

    family: str
    path: Path
    layout: Layout
    variant: Variant
    latent_channels: int
    extra: dict[str, Any] = field(default_factory=dict)
    #: generation tasks this model supports (a subset of `TASKS`)
    tasks: tuple[str, ...] = ("t2v",)
    rules: SizeRules | None = None
