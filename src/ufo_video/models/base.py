"""The model-adapter interface: everything the trainer and inference may ask of a model family.

A family (EasyAnimate V5.1 first) implements `ModelAdapter` in one module under `models/`, and is
listed once in `models/registry.py`. Trainer, inference, LoRA tools and CLI talk only to this
interface, so they never branch on model names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

Layout = Literal["diffusers", "original"]
Variant = Literal["inp", "t2v"]
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder is, read from its configs alone (no weights)."""

    family: str
    path: Path
    layout: Layout
    variant: Variant
    latent_channels: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextEmbeds:
    """Encoded prompts: hidden states [B, L, D] and attention mask [B, L]."""

    embeds: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TextEmbeds":
        return TextEmbeds(self.embeds.to(device=device, dtype=dtype or self.embeds.dtype), self.mask.to(device))


class ModelAdapter(ABC):
    """One model family. Class methods read folders; an instance holds loaded components."""

    family: ClassVar[str]
    #: the family's usual spatial and temporal VAE compression (an instance takes its own VAE's
    #: from `info.extra` when the adapter read them from the config) and the transformer's patch
    spatial_factor: int
    temporal_factor: int
    patch_size: ClassVar[int]

    def __init__(self, info: ModelInfo, components: dict[str, Any]):
        self.info = info
        # a model's VAE may compress differently from the family's usual one (the shipped tiny
        # base: 4x spatial, 2x temporal); what its config says wins over the class defaults
        self.spatial_factor = int(info.extra.get("spatial_factor", type(self).spatial_factor))
        self.temporal_factor = int(info.extra.get("temporal_factor", type(self).temporal_factor))
        self.transformer: nn.Module | None = components.get("transformer")
        self.vae: nn.Module | None = components.get("vae")
        self.text_encoder: nn.Module | None = components.get("text_encoder")
        self.tokenizer: Any = components.get("tokenizer")
        self.scheduler: Any = components.get("scheduler")

    # ---- folders -------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """True when `path` looks like a model folder of this family (either layout)."""

    @classmethod
    @abstractmethod
    def inspect(cls, path: Path) -> ModelInfo:
        """Layout and variant from configs only; raises `ModelLoadError` on a malformed folder."""

    @classmethod
    @abstractmethod
    def load(
        cls,
        path: Path,
        *,
        dtype: torch.dtype = torch.float32,
        components: tuple[str, ...] = COMPONENTS,
    ) -> "ModelAdapter":
        """Load the requested components strictly (exact keys and shapes) onto the CPU."""

    @classmethod
    @abstractmethod
    def build_meta(cls, path: Path) -> dict[str, nn.Module]:
        """Each weight-bearing component built on the meta device from its config (no weights read)."""

    @classmethod
    @abstractmethod
    def has_weights(cls, path: Path) -> bool:
        """False for a configs-only folder (every weight file absent); errors on a partial one."""

    @classmethod
    @abstractmethod
    def weight_shapes(cls, path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
        """Per component, tensor name -> shape from the safetensors headers, in the model's naming."""

    # ---- encoders ------------------------------------------------------------------------
    @abstractmethod
    def encode_text(self, prompts: list[str], device: torch.device | str) -> TextEmbeds:
        """Prompts -> text-encoder hidden states and mask, exactly as the pipelines compute them."""

    @abstractmethod
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, F, H, W] in [-1, 1] -> scaled latents [B, C, f, h, w]."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels in [-1, 1]."""

    @abstractmethod
    def inpaint_conditioning(self, pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inpaint latents for pixels [B,3,F,H,W] and a pixel mask [B,1,F,H,W] (1 = to generate)."""

    # ---- denoiser ------------------------------------------------------------------------
    @abstractmethod
    def predict(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: TextEmbeds,
        inpaint_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The transformer's flow prediction for noisy latents at `timesteps` (0..1000 scale)."""

    @property
    def is_inpaint(self) -> bool:
        return self.info.variant == "inp"

    def latent_frames(self, n_frames: int) -> int:
        return (n_frames - 1) // self.temporal_factor + 1

    # ---- LoRA ----------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def lora_target_presets(cls) -> dict[str, list[str]]:
        """Preset name -> module-name suffixes (PEFT `target_modules` style)."""

    @classmethod
    @abstractmethod
    def to_original_module_name(cls, name: str) -> str:
        """Our (diffusers) module path -> the family's original module path (used in kohya keys)."""

    @classmethod
    @abstractmethod
    def from_original_module_name(cls, name: str) -> str:
        """The family's original module path -> our (diffusers) module path."""

    # ---- pipelines -----------------------------------------------------------------------
    @abstractmethod
    def pipeline(self) -> Any:
        """A diffusers pipeline over the loaded components (shares them; no copies)."""
