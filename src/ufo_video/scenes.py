"""Synthetic moving-content clips and their captions: the training data of the shipped tiny base.

A scene is one big coloured shape moving in a straight line, 4 px per frame, over a darker
background of another colour (plain, or a smooth gradient). Everything is low-frequency on
purpose: the first attempt used striped/checkered textures and 3 px/frame, and its tiny VAE spent
its capacity on the textures and lost the motion (docs/tiny-base-model.md). Every sampled
attribute is named in the caption, so a model trained on them must read the prompt to know what
to draw and where to move it. The words come from a small fixed vocabulary (`VOCABULARY`) that
the tokenizer turns into one token each, so the random text encoder gives each word its own
embedding.

`render` still draws the old textures and camera pans (the `Scene` fields are unchanged, so
callers that build scenes by hand keep working), but `sample_scene` - the training data - only
draws `TRAINED_PATTERNS` without pans: prompts with other patterns or pans are outside what the
shipped model knows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "green": (40, 190, 60),
    "blue": (45, 90, 230),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "purple": (160, 60, 210),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
PATTERNS = ("plain", "gradient", "striped", "checkered")
TRAINED_PATTERNS = ("plain", "gradient")
PANS = ("none", "left", "right")
SHAPE_SPEED_PX = 4  # per frame: 16 px per latent frame (4x temporal compression)
PAN_SPEED_PX = 2  # per frame; "the camera pans left" makes the background slide right
STRIPE_PERIOD_PX = 16
SHAPE_RADIUS_PX = (10, 13)

VOCABULARY = (
    ["a", "moves", "over", "background", "the", "camera", "pans", ","]
    + list(COLOURS) + list(SHAPES) + list(DIRECTIONS) + list(PATTERNS)
)  # fmt: skip


@dataclass(frozen=True)
class Scene:
    """Everything that determines one clip (and its caption)."""

    colour: str
    shape: str
    direction: str
    bg_colour: str
    pattern: str
    pan: str
    radius: int
    start: tuple[int, int]  # shape centre (x, y) in frame 0
    bg_phase: int  # background texture offset in px

    @property
    def prompt(self) -> str:
        text = f"a {self.colour} {self.shape} moves {self.direction} over a {self.bg_colour} {self.pattern} background"
        if self.pan != "none":
            text += f", the camera pans {self.pan}"
        return text


def _pick(rng: np.random.Generator, items) -> str:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def sample_scene(rng: np.random.Generator, frames: int, size: int) -> Scene:
    """A random scene whose shape stays fully inside the frame for all `frames` frames."""
    colour = _pick(rng, COLOURS)
    bg_colour = _pick(rng, [c for c in COLOURS if c != colour])
    direction = _pick(rng, DIRECTIONS)
    radius = int(rng.integers(SHAPE_RADIUS_PX[0], SHAPE_RADIUS_PX[1] + 1))
    travel = SHAPE_SPEED_PX * (frames - 1)
    dx, dy = DIRECTIONS[direction]
    lo, hi = radius + 1, size - radius - 1

    def axis_start(d: int) -> int:
        if d > 0:
            return int(rng.integers(lo, hi - travel + 1))
        if d < 0:
            return int(rng.integers(lo + travel, hi + 1))
        return int(rng.integers(lo, hi + 1))

    return Scene(
        colour=colour,
        shape=_pick(rng, SHAPES),
        direction=direction,
        bg_colour=bg_colour,
        pattern=_pick(rng, TRAINED_PATTERNS),
        pan="none",
        radius=radius,
        start=(axis_start(dx), axis_start(dy)),
        bg_phase=int(rng.integers(STRIPE_PERIOD_PX * 2)),
    )


def _background(scene: Scene, offset: int, size: int) -> np.ndarray:
    """[H, W, 3] float background, shifted right by `offset` px (texture is periodic)."""
    base = np.array(COLOURS[scene.bg_colour], dtype=np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xs - offset + scene.bg_phase
    if scene.pattern == "plain":
        light = np.full((size, size), 0.5, dtype=np.float32)
    elif scene.pattern == "striped":
        light = (np.floor(u / (STRIPE_PERIOD_PX / 2)) % 2 == 0).astype(np.float32)
    elif scene.pattern == "checkered":
        light = ((np.floor(u / (STRIPE_PERIOD_PX / 2)) + np.floor(ys / (STRIPE_PERIOD_PX / 2))) % 2 == 0).astype(np.float32)
    elif scene.pattern == "gradient":  # a smooth wave, so a pan is visible as sliding bands
        light = 0.5 + 0.5 * np.cos(2 * np.pi * u / (size * 1.5))
    else:
        raise ValueError(f"unknown background pattern {scene.pattern!r}; expected one of {PATTERNS}")
    level = 0.25 + 0.45 * light  # darker than the shape so it always stands out
    return level[..., None] * base


def _shape_mask(scene: Scene, cx: float, cy: float, size: int) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    r = scene.radius
    if scene.shape == "circle":
        return ((xs - cx) ** 2 + (ys - cy) ** 2 <= r * r).astype(np.float32)
    if scene.shape == "square":
        return ((np.abs(xs - cx) <= r * 0.85) & (np.abs(ys - cy) <= r * 0.85)).astype(np.float32)
    # triangle pointing up: inside when below the two slanted edges and above the base
    top, base = cy - r, cy + r * 0.8
    half = (ys - top) / (base - top) * r
    return ((ys >= top) & (ys <= base) & (np.abs(xs - cx) <= half)).astype(np.float32)


def render(scene: Scene, frames: int, size: int) -> np.ndarray:
    """The clip as float32 [3, F, H, W] in [-1, 1] (the VAE's input range)."""
    dx, dy = DIRECTIONS[scene.direction]
    pan = {"none": 0, "left": PAN_SPEED_PX, "right": -PAN_SPEED_PX}[scene.pan]
    colour = np.array(COLOURS[scene.colour], dtype=np.float32)
    out = np.empty((frames, size, size, 3), dtype=np.float32)
    for t in range(frames):
        bg = _background(scene, pan * t, size)
        cx = scene.start[0] + dx * SHAPE_SPEED_PX * t
        cy = scene.start[1] + dy * SHAPE_SPEED_PX * t
        m = _shape_mask(scene, cx, cy, size)[..., None]
        out[t] = bg * (1 - m) + colour * m
    return (out / 127.5 - 1.0).transpose(3, 0, 1, 2)


def make_clips(rng: np.random.Generator, count: int, frames: int, size: int) -> tuple[np.ndarray, list[Scene]]:
    """`count` random clips [N, 3, F, H, W] in [-1, 1] and their scenes."""
    scenes = [sample_scene(rng, frames, size) for _ in range(count)]
    return np.stack([render(s, frames, size) for s in scenes]), scenes


def tokenizer_merges() -> list[tuple[str, str]]:
    """Byte-level BPE merges that make every vocabulary word (with and without its leading space,
    shown as 'Ġ') a single token: each word is built left to right one character at a time. The
    'Ġ' spellings come first (BPE applies merges by rank), so no plain-word pair such as ('r', 'e')
    can split 'Ġred' before its own chain does."""
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for spelled in ["Ġ" + w for w in VOCABULARY] + list(VOCABULARY):
        if len(spelled) > 1:
            acc = spelled[0]
            for ch in spelled[1:]:
                pair = (acc, ch)
                if pair not in seen:
                    seen.add(pair)
                    merges.append(pair)
                acc += ch
    return merges
