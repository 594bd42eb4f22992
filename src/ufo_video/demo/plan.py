"""What the demo does, in numbers: one frozen `DemoPlan` for the full run and one for `--quick`.

Every size, count and seed of the demo lives here, so the report can print the plan it ran and
a change of budget is one edit. The full plan is sized for a whole demo of at most about five
minutes on two CPU cores (its sweep: 2 prompts x 2 seeds x (base + 2 checkpoints x 2 weights) = 20
small videos, about 10 s on one free core); the quick plan (the test) for well under a minute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ufo_video.scenes import Scene

# The one place that names the shipped tiny base model (a trained tiny EasyAnimate V5.1 InP in
# the diffusers layout). When the folder is absent the demo says so loudly and uses a random
# tiny model instead; see `steps.base_model`.
TINY_BASE_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-base"


@dataclass(frozen=True)
class Prompt:
    """A generation prompt with its seed. The text is the caption of `scene` (the tiny base's
    own caption language, see `scenes.Scene.prompt`); frame 0 of the scene is the i2v start image."""

    scene: Scene
    seed: int

    @property
    def text(self) -> str:
        return self.scene.prompt


@dataclass(frozen=True)
class DemoPlan:
    name: str
    # synthetic dataset (images, videos; one broken file is always added). The scenes move
    # 4 px per frame, so media_frames is limited by media_size (9 frames fit 64 px frames).
    images: int
    videos: int
    media_size: int
    media_frames: int
    # training (static clips, inpaint mode)
    train_size: int
    train_frames: int
    train_steps: int
    batch_size: int
    rank: int
    learning_rate: float
    cache_latents: bool
    # generation
    gen_size: int
    gen_frames: int
    inference_steps: int
    guidance_scale: float
    weights: tuple[float, ...]
    prompts: tuple[Prompt, ...]
    # the chooser: `checkpoints` files saved over the training, then `ufo-video sweep`'s code over
    # them x `sweep_weights` on the first `sweep_prompts` prompts x `sweep_seeds` (t2v), paired
    # with the base, and its recommendation by the stated rule (or "none")
    checkpoints: int = 2
    sweep_prompts: int = 2
    sweep_seeds: tuple[int, ...] = (1, 2)
    sweep_weights: tuple[float, ...] = (0.0, 0.5, 1.0)
    modes: tuple[str, ...] = ("t2v", "i2v")
    fps: int = 8
    seed: int = 42
    workers: int = 1  # decode worker processes for the data check and the train loader

    def to_dict(self) -> dict:
        data = asdict(self)
        for entry, prompt in zip(data["prompts"], self.prompts):
            entry["text"] = prompt.text
        return data


PROMPTS = (
    Prompt(Scene(colour="red", shape="circle", direction="right", bg_colour="blue", pattern="plain", pan="none",
                 radius=10, start=(16, 32), bg_phase=0), seed=43),
    Prompt(Scene(colour="yellow", shape="square", direction="down", bg_colour="purple", pattern="gradient",
                 pan="none", radius=10, start=(32, 16), bg_phase=0), seed=44),
    Prompt(Scene(colour="white", shape="triangle", direction="left", bg_colour="green", pattern="plain", pan="none",
                 radius=11, start=(46, 32), bg_phase=0), seed=45),
    Prompt(Scene(colour="green", shape="circle", direction="up", bg_colour="red", pattern="gradient", pan="none",
                 radius=11, start=(32, 46), bg_phase=0), seed=46),
)  # fmt: skip

FULL = DemoPlan(
    name="full",
    images=8,
    videos=4,
    media_size=64,
    media_frames=9,
    train_size=64,
    train_frames=9,
    train_steps=300,
    batch_size=2,
    rank=16,
    learning_rate=6e-4,
    cache_latents=True,
    gen_size=64,
    gen_frames=9,
    inference_steps=12,
    guidance_scale=6.0,
    weights=(0.0, 0.05, 0.1, 0.2, 0.5, 1.0),
    prompts=PROMPTS,
)

QUICK = DemoPlan(
    name="quick",
    images=3,
    videos=1,
    media_size=64,
    media_frames=5,
    train_size=32,
    train_frames=5,
    train_steps=3,
    batch_size=2,
    rank=4,
    learning_rate=1e-3,
    cache_latents=True,
    gen_size=32,
    gen_frames=5,
    inference_steps=2,
    guidance_scale=6.0,
    weights=(0.0, 0.2, 1.0),
    prompts=PROMPTS[:1],
    checkpoints=3,
    sweep_prompts=1,
    sweep_weights=(0.0, 1.0),
)
