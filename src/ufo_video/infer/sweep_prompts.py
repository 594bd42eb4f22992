"""The (prompt, seed) samples of a sweep: given prompts, a dataset's captions, or a default set.

A setting's effect is judged over many (prompt, seed) pairs, paired with the base on each, so a
sweep needs prompts that span what users render: some scenes that should stay still (where a UFO
must not add flicker) and some that should move (where it must not freeze them). With no
prompts given, the default set below is used. For image-to-video (`--default-prompts i2v`) the
default start images are drawn here, deterministically (plain shapes on plain backgrounds, the
scene each prompt names), into the sweep's folder, so the sidecars point at real files; to judge
on your own subjects give `--prompts FILE` with an "image" per line.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ufo_video.errors import UfoError
from ufo_video.infer.settings import VideoRequest

# (kind, prompt): static scenes first, then dynamic ones
DEFAULT_T2V = (
    ("static", "a bowl of red apples on a wooden table, still life, locked-off camera"),
    ("static", "a calm mountain lake at dawn, no wind, static shot"),
    ("static", "a red square on a plain blue background, nothing moves"),
    ("dynamic", "a dog running across a grassy field, tracking shot"),
    ("dynamic", "ocean waves crashing on dark rocks"),
    ("dynamic", "a red square moves right over a plain blue background"),
)
# (kind, prompt, shape, shape colour, background colour): the start image is drawn from these
DEFAULT_I2V = (
    ("static", "a red square on a plain blue background, nothing moves", "square", (220, 30, 30), (30, 60, 200)),
    ("static", "a yellow circle on a plain green background, nothing moves", "circle", (240, 220, 40), (40, 150, 60)),
    ("dynamic", "the red square moves right over the plain blue background", "square", (220, 30, 30), (30, 60, 200)),
    ("dynamic", "the yellow circle moves down over the plain green background", "circle", (240, 220, 40), (40, 150, 60)),
)


@dataclass(frozen=True)
class Sample:
    name: str  # folder / file-name part, unique within the sweep
    request: VideoRequest
    prompt_index: int
    kind: str = ""  # "static" / "dynamic" for the default sets, else ""

    def to_dict(self) -> dict:
        return {"name": self.name, "prompt": self.request.prompt, "seed": self.request.seed,
                "image": self.request.image, "prompt_index": self.prompt_index, "kind": self.kind}  # fmt: skip


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UfoError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. 1,2,3") from None
    if not seeds:
        raise UfoError("--seeds is empty; give whole numbers separated by commas, e.g. 1,2,3")
    if len(set(seeds)) != len(seeds):
        raise UfoError(f"--seeds {text!r} repeats a seed")
    return seeds


def caption_prompts(metadata: str | Path, count: int) -> list[str]:
    """`count` distinct non-empty captions ("text" or "cap") of a dataset's metadata, spread
    evenly over the file (deterministic), so they cover more than its first clips."""
    from ufo_video.data.metadata import read_records

    if count < 1:
        raise UfoError(f"--captions must be at least 1, got {count}")
    seen: list[str] = []
    for rec in read_records(metadata):
        text = rec.get("text", rec.get("cap"))
        if isinstance(text, str) and text.strip() and text.strip() not in seen:
            seen.append(text.strip())
    if not seen:
        raise UfoError(f"{metadata}: no entry has a caption ('text' or 'cap'); give --prompts FILE instead")
    if len(seen) <= count:
        return seen
    return [seen[round(i * (len(seen) - 1) / (count - 1))] for i in range(count)] if count > 1 else [seen[0]]


def start_image(path: Path, shape: str, fg: tuple, bg: tuple, size: tuple[int, int]) -> Path:
    """Draw one default start image (H x W = size): a shape a quarter of the short side, left of centre."""
    from PIL import Image, ImageDraw

    h, w = size
    img = Image.new("RGB", (w, h), bg)
    r = max(2, min(h, w) // 8)
    cx, cy = w // 3, h // 2
    box = (cx - r, cy - r, cx + r, cy + r)
    draw = ImageDraw.Draw(img)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=fg)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def default_requests(task: str, base: VideoRequest, image_dir: Path, size: tuple[int, int]) -> list[tuple[VideoRequest, str]]:
    """The default set for `task` ("t2v" or "i2v") as (request, kind)."""
    if task == "t2v":
        return [(replace(base, prompt=p, image=None), kind) for kind, p in DEFAULT_T2V]
    if task == "i2v":
        out = []
        for i, (kind, prompt, shape, fg, bg) in enumerate(DEFAULT_I2V):
            img = start_image(image_dir / f"start-{i + 1}.png", shape, fg, bg, size)
            out.append((replace(base, prompt=prompt, image=str(img.resolve())), kind))
        return out
    raise UfoError(f"--default-prompts {task!r}: choose t2v or i2v")


def build_samples(requests: list[tuple[VideoRequest, str]], seeds: list[int] | None) -> list[Sample]:
    """Every prompt at every seed (a prompt's own seed when `seeds` is None); names p{i}-seed{s}."""
    samples = []
    for i, (req, kind) in enumerate(requests):
        for seed in seeds if seeds is not None else [req.seed]:
            samples.append(Sample(f"p{i + 1}-seed{seed}", replace(req, seed=seed), i, kind))
    if len({s.name for s in samples}) != len(samples):
        raise UfoError("the prompt file gives the same prompt line twice with one seed; give distinct seeds")
    return samples
