"""Helpers shared by the LoRA tests (no tests here): tiny transformer-only model, fixed forward, random LoRAs."""

from __future__ import annotations

from pathlib import Path

import torch

from ufo_video.config import LoraSection
from ufo_video.lora.formats import LoraModule, LoraWeights, save_lora, write_lora
from ufo_video.lora.inject import add_lora
from ufo_video.models.registry import load_model


def load_tiny(path: Path, dtype: torch.dtype = torch.float32):
    return load_model(path, dtype=dtype, components=("transformer",))


def forward(model, seed: int = 0) -> torch.Tensor:
    """One transformer call on fixed random inputs (InP: 4 latent + 5 conditioning channels)."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.transformer.parameters()).dtype
    latents = torch.randn(1, 4, 3, 8, 8, generator=g).to(dtype)
    cond = torch.randn(1, 5, 3, 8, 8, generator=g).to(dtype)
    text = {"embeds": torch.randn(1, 6, 16, generator=g).to(dtype), "mask": torch.ones(1, 6, dtype=torch.long)}
    with torch.no_grad():
        return model.predict(latents, torch.tensor([500.0]), text, {"inpaint_latents": cond})


def random_lora_file(
    model_path: Path,
    out: Path,
    *,
    rank: int = 4,
    alpha: float = 2.0,
    targets: str | list[str] = "all-linear",
    seed: int = 1,
    scale: float = 0.3,
) -> Path:
    """A kohya LoRA for the tiny model with non-zero up weights (so it changes the output)."""
    model = load_tiny(model_path)
    add_lora(model, LoraSection(rank=rank, network_alpha=alpha, target_modules=targets), "rand")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.transformer.named_parameters():
            if ".rand." in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return save_lora(out, model, "rand", {"note": "test"})


def weights_from(modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]], fmt: str = "kohya") -> LoraWeights:
    return LoraWeights(format=fmt, modules={k: LoraModule(d, u, a) for k, (d, u, a) in modules.items()})


__all__ = ["forward", "load_tiny", "random_lora_file", "weights_from", "write_lora"]
