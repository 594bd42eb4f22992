"""What the contract tests share: tiny folders and trained LoRAs built once per session, lazily,
through public interfaces only (`make_tiny_model`, the adapter, `ufo-video train`).

Nothing here names a family: sizes, frame counts, train modes and experts come from the adapter.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from contract.families import Variant
from test_train_helpers import losses, write_config
from ufo_video.cli import main

SIDE = 32  # the suite's side, rounded up to the model's multiple and to at least two latent cells
MIN_CELLS = 2  # latent cells per side at the least: a 1x1 latent is no image (a VAE may pad by one cell)
FRAMES = 5  # rounded to the model's frame rule


def supports_training(family: str) -> bool:
    """False when the family's `check_trainable` refuses training (it reads no folder to say so)."""
    from ufo_video.errors import UfoError
    from ufo_video.models.registry import ADAPTERS

    try:
        ADAPTERS[family].check_trainable(Path("."))
    except UfoError:
        return False
    return True


def shell(folder: Path):
    from ufo_video.models.registry import model_shell

    return model_shell(folder)


def geometry(folder: Path) -> tuple[int, int]:
    """(side, frames) for this model: the suite's 32 px / 5 frames moved onto its own rules, with
    at least `MIN_CELLS` latent cells per side (32 px stays 32 where the multiple is 16 or less)."""
    rules = shell(folder).rules
    side = math.ceil(max(SIDE, MIN_CELLS * rules.size_multiple) / rules.size_multiple) * rules.size_multiple
    return side, rules.nearest_frames(FRAMES)


def train_mode(folder: Path) -> str:
    """The image-conditioning mix where the model takes images (so it is trained), else text only."""
    return "inpaint" if shell(folder).is_inpaint else "normal"


def cache_mode(folder: Path) -> str:
    """The train mode in which a cached run must equal an encoding run bit for bit: text only where
    the model has text-to-video, else its image conditioning. (A model's image-conditioning mix may
    draw differently from the cache by design: EasyAnimate InP's cache holds only the fixed-shape
    mask kinds, see models/easyanimate_masks.py.)"""
    return "normal" if "t2v" in shell(folder).tasks else "inpaint"


def experts(folder: Path) -> tuple[str, ...]:
    """The experts one run trains each (`train.expert`); a single-expert model: just the default."""
    names = tuple(e.component for e in shell(folder).experts())
    return names if len(names) > 1 else ("",)


class TinyModels:
    """One folder per variant, written on first use (seed 0)."""

    def __init__(self, root: Path):
        self.root, self._made = root, {}

    def __call__(self, v: Variant) -> Path:
        if v not in self._made:
            from ufo_video.models.registry import make_tiny_model

            folder, _ = make_tiny_model(v.family, self.root / v.id, layout=v.layout, variant=v.variant, seed=0)
            self._made[v] = folder
        return self._made[v]


@dataclass(frozen=True)
class Run:
    """A finished two-step training run."""

    out: Path
    config: Path
    overrides: tuple[str, ...]

    @property
    def lora(self) -> Path:
        return self.out / "checkpoint-2.safetensors"

    def losses(self) -> list[tuple[int, float]]:
        return losses(self.out)

    def metadata(self) -> dict[str, str]:
        from safetensors import safe_open

        with safe_open(str(self.lora), framework="pt") as handle:
            return dict(handle.metadata())


class Trainings:
    """`ufo-video train` for two steps per (variant, expert), run once and shared by the contracts."""

    def __init__(self, root: Path, models: TinyModels, dataset: Path):
        self.root, self.models, self.dataset, self._runs = root, models, dataset, {}

    def overrides(self, v: Variant, expert: str, mode: str | None = None) -> tuple[str, ...]:
        folder = self.models(v)
        side, frames = geometry(folder)
        sizes = [f"{k}={side}" for k in ("image_sample_size", "video_sample_size", "token_sample_size")]
        return (*sizes, f"video_sample_n_frames={frames}", f"train.train_mode={mode or train_mode(folder)}",
                *([f"train.expert={expert}"] if expert else []))  # fmt: skip

    def __call__(self, v: Variant, expert: str = "", mode: str | None = None) -> Run:
        """The run of `expert` in train mode `mode` (default: `train_mode`)."""
        mode = mode or train_mode(self.models(v))
        key = (v, expert, mode)
        if key not in self._runs:
            name = f"{v.id}-{expert or 'only'}-{mode}"
            out = self.root / name
            cfg = write_config(self.root / f"{name}.toml", self.models(v), self.dataset, out, max_train_steps=2,
                               checkpointing_steps=2, save_state=False, learning_rate=5e-2)  # fmt: skip
            overrides = self.overrides(v, expert, mode)
            assert main(["train", str(cfg), *overrides]) == 0, f"training {name} failed"
            self._runs[key] = Run(out, cfg, overrides)
        return self._runs[key]


def first_lora(trainings: Trainings, v: Variant, mode: str | None = None) -> Run:
    """A trained LoRA of the variant (its first expert's)."""
    return trainings(v, experts(trainings.models(v))[0], mode)


def model_index_class(folder: Path) -> str | None:
    index = folder / "model_index.json"
    return json.loads(index.read_text()).get("_class_name") if index.is_file() else None
