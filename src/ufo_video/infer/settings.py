"""Generation settings: built from the one validated `UfoConfig`, then command-line flags.

`GenerationSettings` holds what is shared by every video of a run (model, size, steps, flow
shift, LoRAs, memory mode, step cache); `VideoRequest` holds what may change per video (prompt, negative
prompt, seed, start/end image). Both are plain data and are written to each video's sidecar,
from which `--from-sidecar` rebuilds them exactly.

Sizes and frame counts follow the model's own rules (`ModelAdapter.rules`: sides a multiple of the
VAE compression x patch: 16 for most models, 32 for a 16x VAE; frames
`temporal * k + 1`). Given as flags (or as predict-script variables) they are rounded to the
nearest valid value with a printed notice naming the model's numbers; the same mistakes inside a
config file are errors naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ufo_video.config import MEMORY_MODES, UfoConfig
from ufo_video.errors import ConfigError
from ufo_video.models.info import SizeRules

CACHE_KINDS = ("none", "first-block")
OUTPUT_FORMATS = ("mp4", "gif", "png")
DEFAULT_CACHE_THRESHOLD = 0.08  # the reference's TeaCache threshold

Notify = Callable[[str], None]


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA file and the weight (alpha multiplier) it is applied with. `expert` (multi-expert
    models): the expert it goes to, overriding the file's `ufo_expert` metadata (None: as the
    metadata says, else the first expert)."""

    path: str
    weight: float
    expert: str | None = None


@dataclass(frozen=True)
class VideoRequest:
    """What may differ between the videos of one run."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 43
    image: str | None = None
    end_image: str | None = None


@dataclass(frozen=True)
class GenerationSettings:
    """What every video of one run shares."""

    model: str
    sample_size: tuple[int, int]
    video_length: int
    fps: int
    num_inference_steps: int
    guidance_scale: float
    memory_mode: str
    weight_dtype: str
    device: str = "auto"
    loras: tuple[LoraSpec, ...] = ()
    fuse: bool = False
    cache: str = "none"
    cache_threshold: float = DEFAULT_CACHE_THRESHOLD
    blocks_to_swap: int = 0  # transformer blocks kept in host memory (placement only: the frames are the same)
    flow_shift: float | None = None  # the sampling schedule's static shift; None: the model's scheduler config

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sample_size"] = list(self.sample_size)
        for lora in data["loras"]:  # recorded only where the user named an expert
            if lora.get("expert") is None:
                lora.pop("expert", None)
        return data


def default_rules() -> SizeRules:
    """The common grid (16-pixel sides, 4k+1 frames) for when no model folder is known yet."""
    return SizeRules(spatial_factor=8, temporal_factor=4, patch_size=2)


def model_rules(model: str | None) -> SizeRules:
    """The size rules of the model folder `model` from its configs; the common grid when the
    folder does not exist (loading it then fails with its own clear error)."""
    from pathlib import Path

    if not model or not Path(model).is_dir():
        return default_rules()
    from ufo_video.models.registry import model_shell

    return model_shell(model).rules


def model_default_fps(model: str | None, generic: int) -> int:
    """The frame rate to generate at when none was given: the model family's own where its models
    condition on one (`ModelAdapter.default_fps`: a clip made at another rate moves differently),
    else `generic` (infer.fps's default)."""
    from pathlib import Path

    if not model or not Path(model).is_dir():
        return generic
    from ufo_video.models.registry import model_shell

    return model_shell(model).default_fps or generic


def round_size(height: int, width: int, notify: Notify, rules: SizeRules | None = None) -> tuple[int, int]:
    """Each side to the nearest positive multiple of the model's size multiple, announcing any change."""
    rules = rules or default_rules()
    m = rules.size_multiple
    new = tuple(max(m, int(m * math.floor(s / m + 0.5))) for s in (height, width))
    if new != (height, width):
        notify(f"notice: sample size {height}x{width} is not {rules.size_rule()}; using {new[0]}x{new[1]}")
    return new  # type: ignore[return-value]


def round_frames(n: int, notify: Notify, rules: SizeRules | None = None) -> int:
    """To the nearest valid frame count of the model (ties go up), announcing any change."""
    rules = rules or default_rules()
    if n < 1:
        raise ConfigError(f"video_length must be at least 1, got {n}")
    new = rules.nearest_frames(n)
    if new != n:
        notify(f"notice: video_length {n} is not {rules.frame_rule()}; using {new}")
    return new


def check_against_model(cfg: UfoConfig, rules: SizeRules) -> None:
    """[infer] sample_size / video_length of a config file against the model's rules: an error
    naming the key (values from flags were already rounded with a notice)."""
    inf = cfg.infer
    bad = [side for side in inf.sample_size if side % rules.size_multiple]
    if bad:
        raise ConfigError(f"infer.sample_size={list(inf.sample_size)}: both sides must be {rules.size_rule()}")
    if not rules.frames_ok(inf.video_length):
        n = inf.video_length
        raise ConfigError(f"infer.video_length={n} must be {rules.frame_rule()}; nearest: {rules.nearest_frames(n)}")


def parse_lora_arg(text: str, default_weight: float) -> LoraSpec:
    """`PATH`, `PATH:WEIGHT`, either followed by `@EXPERT` (multi-expert models: the expert the
    file goes to, for files without `ufo_expert` metadata). A name that exists as a file is a path
    whatever it contains; a tail after the last colon without a slash is a weight, and a bad one
    (`:abc`, `:nan`, `:inf`) is an error naming the weight, not a "file not found" for the whole text."""
    if not Path(text).is_file():
        head, at, expert = text.rpartition("@")
        if at and head and expert and not any(c in expert for c in "/\\:"):
            spec = parse_lora_arg(head, default_weight)
            return LoraSpec(spec.path, spec.weight, expert)
    path, sep, tail = text.rpartition(":")
    if not sep or not path or "/" in tail or "\\" in tail or Path(text).is_file():
        return LoraSpec(text, float(default_weight))
    try:
        weight = float(tail)
    except ValueError:
        raise ConfigError(f"--lora {text}: the weight {tail!r} is not a number; write PATH:WEIGHT, e.g. {path}:0.15") from None
    if not math.isfinite(weight):
        raise ConfigError(f"--lora {text}: the weight must be a finite number, got {tail!r}")
    return LoraSpec(path, weight)


def _assign(cfg: UfoConfig, section: str, key: str, value: Any) -> None:
    """Set a validated config field; a bad value becomes one `ConfigError` naming the field."""
    try:
        setattr(getattr(cfg, section), key, value)
    except ValidationError as exc:
        msg = "; ".join(e["msg"].replace("Value error, ", "") for e in exc.errors())
        raise ConfigError(f"{section}.{key}={value!r}: {msg}") from None


def check_memory_mode(mode: str) -> str:
    if mode not in MEMORY_MODES:
        raise ConfigError(f"unknown memory mode {mode!r}; choose one of: {', '.join(MEMORY_MODES)}")
    return mode


def apply_values(cfg: UfoConfig, values: dict[str, Any], notify: Notify) -> UfoConfig:
    """Apply flag / script values (None = not given) onto the config, rounding sizes with notices.

    Keys are the config's own names: model (path), GPU_memory_mode, weight_dtype, device, and the
    [infer] keys (prompt, sample_size, video_length, ...).
    """
    v = {k: val for k, val in values.items() if val is not None}
    if "model" in v:
        _assign(cfg, "model", "pretrained_model_name_or_path", str(v.pop("model")))
    rules = model_rules(cfg.model.pretrained_model_name_or_path)
    if "GPU_memory_mode" in v:
        _assign(cfg, "model", "GPU_memory_mode", check_memory_mode(str(v.pop("GPU_memory_mode"))))
    for key in ("weight_dtype", "device"):
        if key in v:
            _assign(cfg, "model", key, v.pop(key))
    if "sample_size" in v:
        size = v.pop("sample_size")
        if isinstance(size, (int, float)):
            size = (size, size)
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise ConfigError(f"sample_size must be [height, width], got {size!r}")
        _assign(cfg, "infer", "sample_size", round_size(int(size[0]), int(size[1]), notify, rules))
    if "video_length" in v:
        _assign(cfg, "infer", "video_length", round_frames(int(v.pop("video_length")), notify, rules))
    for key, val in v.items():
        _assign(cfg, "infer", key, val)
    return cfg


def settings_from_config(
    cfg: UfoConfig,
    *,
    loras: list[LoraSpec] | None = None,
    fuse: bool | None = None,
    cache: str | None = None,
    cache_threshold: float | None = None,
) -> GenerationSettings:
    """The run's shared settings from the config; explicit arguments (CLI flags) win.

    LoRAs: the explicit list, else [infer] lora_path/lora_weight followed by [infer] loras."""
    inf, mod = cfg.infer, cfg.model
    fuse = inf.fuse_lora if fuse is None else fuse
    cache = inf.cache if cache is None else cache
    cache_threshold = inf.cache_threshold if cache_threshold is None else cache_threshold
    if cache not in CACHE_KINDS:
        raise ConfigError(f"unknown step cache {cache!r}; choose one of: {', '.join(CACHE_KINDS)}")
    if not cache_threshold > 0:
        raise ConfigError(f"cache threshold must be > 0, got {cache_threshold}")
    check_against_model(cfg, model_rules(mod.pretrained_model_name_or_path))
    if loras is None:
        loras = [LoraSpec(inf.lora_path, inf.lora_weight)] if inf.lora_path else []
        loras += [LoraSpec(entry.path, entry.weight) for entry in inf.loras]
    return GenerationSettings(
        model=mod.pretrained_model_name_or_path,
        sample_size=(int(inf.sample_size[0]), int(inf.sample_size[1])),
        video_length=inf.video_length,
        fps=inf.fps if "fps" in inf.model_fields_set else model_default_fps(mod.pretrained_model_name_or_path, inf.fps),
        num_inference_steps=inf.num_inference_steps,
        guidance_scale=inf.guidance_scale,
        memory_mode=check_memory_mode(mod.GPU_memory_mode),
        weight_dtype=mod.weight_dtype,
        device=mod.device,
        loras=tuple(loras),
        fuse=fuse,
        cache=cache,
        cache_threshold=float(cache_threshold),
        blocks_to_swap=inf.blocks_to_swap,
        flow_shift=inf.flow_shift,
    )


def request_from_config(cfg: UfoConfig) -> VideoRequest:
    inf = cfg.infer
    return VideoRequest(inf.prompt, inf.negative_prompt, inf.seed, inf.validation_image_start, inf.validation_image_end)


def settings_from_dict(data: dict[str, Any]) -> GenerationSettings:
    """Inverse of `GenerationSettings.to_dict` (used by `--from-sidecar`)."""
    try:
        d = dict(data)
        d["sample_size"] = tuple(int(s) for s in d["sample_size"])
        d["loras"] = tuple(LoraSpec(str(x["path"]), float(x["weight"]), x.get("expert")) for x in d.get("loras", []))
        if d.get("flow_shift") is not None:
            d["flow_shift"] = float(d["flow_shift"])
        return GenerationSettings(**d)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"sidecar settings are incomplete or malformed ({exc})") from None
