"""The one validated configuration object that flows from the CLI / config file to every stage.

Size and frame rules belong to the model (its VAE and patch: `ModelAdapter.rules`), so they are
checked against the model before anything is loaded (`train.setup.check_sizes`,
`infer.settings.check_against_model`), not here.

Names follow the UFO guide and EasyAnimate's scripts (`video_sample_n_frames`, `lora_weight`,
`GPU_memory_mode`, ...) so users can carry their knowledge over. The file is TOML or YAML and is
grouped in sections (`[model]`, `[data]`, `[lora]`, `[train]`, `[infer]`); on the command line a
`key=value` override may name a key by its section (`train.learning_rate=2e-4`) or, when the
name is unique across sections, by itself (`learning_rate=2e-4`).

Every section forbids unknown keys: a typo is an error naming the key and the closest valid
names, never a silently ignored setting.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ufo_video.errors import ConfigError

MemoryMode = Literal[
    "model_full_load",
    "model_cpu_offload",
    "model_cpu_offload_and_qfloat8",
    "model_cpu_offload_and_fp8_scaled",
    "sequential_cpu_offload",
    "group_offload",
]
MEMORY_MODES: tuple[str, ...] = MemoryMode.__args__  # type: ignore[attr-defined]
#: the modes that store the transformer in fp8, and how (models/memory.py, models/fp8_scaled.py)
FP8_MODES = {"model_cpu_offload_and_qfloat8": "plain", "model_cpu_offload_and_fp8_scaled": "scaled"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class ModelSection(_Section):
    """Which base model to load and how to place it in memory."""

    pretrained_model_name_or_path: str = Field(
        "models/Diffusion_Transformer/EasyAnimateV5.1-12b-zh-InP",
        description="Model folder of any supported family (diffusers layout, or a family's original layout).",
    )
    GPU_memory_mode: MemoryMode = "model_cpu_offload"
    weight_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    device: str = Field("auto", description="'auto' picks cuda when present, else cpu.")
    threads: int | None = Field(
        None, ge=1, le=1024,
        description="torch CPU threads; default: the CPUs this process may use minus those other "
        "processes keep busy (load average), so a shared machine is not oversubscribed.",
    )


class DataSection(_Section):
    """Dataset location, clip construction and bucketing."""

    train_data_dir: str = Field("datasets/internal_datasets", description="Dataset root (DATASET_NAME).")
    train_data_meta: str = Field(
        "datasets/internal_datasets/metadata.json", description="Metadata file (DATASET_META_NAME)."
    )
    allow_outside_paths: bool = Field(False, description="Allow file_path entries outside the dataset root.")
    clip_mode: Literal["static", "video"] = Field(
        "static", description="static: UFO clips (one frame repeated); video: ordinary moving clips."
    )
    static_frame: Literal["middle", "random"] = "middle"
    image_sample_size: int = Field(1024, ge=16, le=4096)
    video_sample_size: int = Field(256, ge=16, le=4096)
    token_sample_size: int = Field(512, ge=16, le=4096)
    video_sample_n_frames: int = Field(49, ge=1, le=1025)
    video_sample_stride: int = Field(1, ge=1, le=64)
    video_sample_fps: float | None = Field(None, gt=0, description="Resample moving clips to this fps.")
    short_video_policy: Literal["skip", "reduce_stride", "fewer_frames"] = Field(
        "reduce_stride",
        description="A moving clip too short for n_frames at the stride: skip it, lower the stride "
        "until it fits, or take the longest 4k+1 count that fits (always reported).",
    )
    enable_bucket: bool = True
    random_hw_adapt: bool = True
    training_with_video_token_length: bool = True
    random_flip: bool = False
    text_drop_ratio: float = Field(0.1, ge=0.0, le=1.0)
    max_failed_fraction: float = Field(0.05, ge=0.0, le=1.0)
    max_image_pixels: int = Field(8192 * 8192, ge=1)
    max_video_pixels: int = Field(4096 * 4096, ge=1)
    max_video_frames: int = Field(100_000, ge=1)
    decode_timeout: float = Field(60.0, gt=0)
    dataloader_num_workers: int = Field(2, ge=0, le=64)
    cache_latents: bool = False
    cache_dir: str | None = None


class LoraSection(_Section):
    """The adapter's shape. UFO is trained at weight 1.0; `lora_weight` in [infer] is for inference."""

    rank: int = Field(128, ge=1, le=4096)
    network_alpha: float = Field(64.0, gt=0)
    target_modules: str | list[str] = Field(
        "all-linear", description="Preset ('all-linear', 'attention') or an explicit list of module names."
    )
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)


class TrainSection(_Section):
    """Objective, optimisation, memory, checkpoints and validation of a training run."""

    output_dir: str = "output_dir"
    train_mode: Literal["inpaint", "normal"] = "inpaint"
    fps: float | None = Field(
        None, gt=0, le=240, description="The frame rate training conditions the model on, for a model that takes "
        "one (LTX-2: its positions in time and the audio length); unset: the model's own default (LTX-2: 24, what "
        "its pipelines generate at). A model without frame-rate conditioning refuses it.",
    )
    weighting_scheme: Literal["uniform", "logit_normal", "shift"] = Field(
        "uniform", description="Noise-level sampling. 'uniform': uniform over the model's own training grid, built "
        "from its scheduler config (EasyAnimate: the 1000-step unshifted grid, as the UFO reference; Wan: that grid "
        "shifted by its scheduler's flow_shift, 3.0 or 5.0 for TI2V-5B, as its sampler's sigmas are). 'shift': the "
        "1000-step unshifted grid shifted by timestep_shift, whatever the model. 'logit_normal': "
        "sigmoid(N(logit_mean, logit_std)). An expert (train.expert) maps any of them into its own range.",
    )
    start_image_noise: Literal["model", "off"] = Field(
        "model", description="'model': add the noise the model's pipeline adds to the given start/end "
        "frames at inference (EasyAnimate InP: add_noise_in_inpaint_model), drawn per sample and step; "
        "'off': train on clean given frames. With the latent cache and 'model', the cache keeps the clean "
        "given frames and each step noises and VAE-encodes them (the VAE is loaded for training).",
    )
    vae_latents: Literal["sample", "mode"] = Field(
        "sample", description="Clean latents: a sample of the VAE posterior per step (the reference's "
        "`.sample()`), or its mean (`.mode()`, deterministic). The latent cache stores mean and std and "
        "samples per step, so both paths give the same latents.",
    )
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    timestep_shift: float = Field(
        3.0, gt=0, description="weighting_scheme=shift only: sigma' = shift*s/(1+(shift-1)*s) on the unshifted grid. "
        "Set to a Wan model's flow_shift it draws what 'uniform' draws there; EasyAnimate samples with a "
        "resolution-dependent shift, which no fixed value reproduces",
    )
    train_batch_size: int = Field(1, ge=1, le=1024)
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096)
    learning_rate: float = Field(1e-4, gt=0, le=1.0)
    lr_scheduler: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
    ] = "constant"
    lr_warmup_steps: int = Field(0, ge=0)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_weight_decay: float = Field(5e-2, ge=0)
    adam_epsilon: float = Field(1e-10, gt=0)
    use_8bit_adam: bool = False
    max_grad_norm: float = Field(0.05, gt=0)
    max_grad_norm_warmup_steps: int = Field(
        0, ge=0, description="Clip starts max_grad_norm_warmup_factor x looser and tightens linearly to "
        "max_grad_norm over this many steps (the reference recipe uses 1000); 0 = constant clip."
    )
    max_grad_norm_warmup_factor: float = Field(5.0, ge=1.0)
    num_train_epochs: int = Field(100, ge=1)
    max_train_steps: int | None = Field(None, ge=1)
    checkpointing_steps: int = Field(100, ge=1)
    checkpoints_total_limit: int | None = Field(None, ge=1)
    save_state: bool = False
    save_dtype: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="dtype of the LoRA files (checkpoint-N.safetensors): bf16 halves them and is what "
        "the reference saves; fp32 keeps the trained values exactly. The resume state is always exact."
    )
    resume_from_checkpoint: str | None = Field(None, description="'latest' or a checkpoint path.")
    overwrite_output_dir: bool = Field(
        False, description="Start over in an output_dir that holds another run's checkpoints (deletes them once the "
        "dataset and model checks passed); "
        "without it such a folder is refused unless resume_from_checkpoint is set.",
    )
    seed: int = 42
    expert: str | None = Field(
        None, description="Multi-expert models (Wan 2.2 A14B): the expert this run trains, 'transformer' "
        "(high noise) or 'transformer_2' (low noise); one UFO LoRA per expert, each on its timestep range."
    )
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"
    gradient_checkpointing: bool = True
    low_vram: bool = False
    fp8_base: bool = Field(False, description="Store frozen base weights in fp8 (compute in bf16).")
    blocks_to_swap: int | Literal["auto"] = Field(
        0, description="Keep the frozen weights of this many transformer blocks (the last ones) in pinned host memory "
        "and copy each to the GPU just before it runs, overlapped with the previous block (needs "
        "gradient_checkpointing); the LoRA and optimizer stay on the GPU. 'auto': the memory planner picks. docs/memory.md",
    )
    activation_offload: bool = Field(
        False, description="Keep the block inputs gradient checkpointing saves in pinned host memory until backward "
        "recomputes the block (needs gradient_checkpointing). docs/memory.md",
    )
    fp8_scaled: bool = Field(
        False, description="With fp8_base: store the Linear weights of the transformer blocks as e4m3 with one "
        "scale per 64 input elements (models/fp8_scaled.py): the same memory, a smaller error than plain fp8.",
    )
    nan_policy: Literal["stop", "skip"] = "stop"
    max_nan_skips: int = Field(10, ge=0)
    validation_steps: int | None = Field(None, ge=1)
    validation_prompts: list[str] = Field(default_factory=list)
    validation_weights: list[float] = Field(default_factory=lambda: [1.0, 0.15])
    logging_dir: str = "logs"
    report_to: Literal["tensorboard", "none"] = "tensorboard"
    collective_timeout_s: int = Field(
        1800, ge=60, description="Timeout of every collective between processes (saving, validation split across "
        "ranks, the loss all-reduce): a process that waits longer fails with the name of the collective."
    )

    @field_validator("blocks_to_swap", mode="before")
    @classmethod
    def _swap_count(cls, v: Any) -> Any:
        # one line instead of one per member of the union
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError("must be a whole number of blocks >= 0, or 'auto'")

    @model_validator(mode="after")
    def _fp8_scaled_needs_fp8_base(self) -> TrainSection:
        if self.fp8_scaled and not self.fp8_base:
            raise ValueError("fp8_scaled=true needs fp8_base=true (scaled fp8 is a way of storing the fp8 base); "
                             "set train.fp8_base=true too, or drop fp8_scaled")
        return self


class LoraEntry(_Section):
    """One LoRA applied at inference with its own weight."""

    path: str
    weight: float = Field(0.15, ge=-10, le=10)


class InferSection(_Section):
    """Generation settings; defaults match the reference predict scripts except `lora_weight`."""

    prompt: str = ""
    negative_prompt: str = ""
    lora_path: str | None = None
    lora_weight: float = Field(0.15, ge=-10, le=10, description="The guide recommends 0.05-0.2.")
    sample_size: tuple[int, int] = (384, 672)
    video_length: int = Field(49, ge=1, le=1025)
    fps: int = Field(8, ge=1, le=120)
    guidance_scale: float = Field(6.0, ge=0)
    num_inference_steps: int = Field(50, ge=1, le=1000)
    flow_shift: float | None = Field(
        None, gt=0, le=100, description="The sampling schedule's static flow shift (what step-distillation LoRAs "
        "come with, e.g. 5-8); None: the model's own scheduler config.",
    )
    seed: int = 43
    loras: list[LoraEntry] = Field(
        default_factory=list, description="Several LoRAs: [{path = '...', weight = 0.15}, ...] (besides lora_path)."
    )
    fuse_lora: bool = False
    blocks_to_swap: int = Field(
        0, ge=0, description="Keep this many transformer blocks in host memory, copied to the GPU just before each "
        "runs (docs/memory.md); 0: none.",
    )
    cache: Literal["none", "first-block"] = Field("none", description="Inference step cache (TeaCache counterpart).")
    cache_threshold: float = Field(0.08, gt=0)
    output_format: Literal["mp4", "gif", "png"] = "mp4"
    validation_image_start: str | None = None
    validation_image_end: str | None = None
    save_path: str = "samples/easyanimate-videos"

    @field_validator("sample_size")
    @classmethod
    def _size_positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        # the model's own multiple (VAE x patch) is checked against the model (infer/settings.py)
        if any(side <= 0 for side in v):
            raise ValueError("both sides must be positive")
        return v


class UfoConfig(_Section):
    """The whole configuration. Each stage reads its own section; nothing reads raw dicts."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    train: TrainSection = Field(default_factory=TrainSection)
    infer: InferSection = Field(default_factory=InferSection)

    def fingerprint(self, sections: tuple[str, ...] = ("model", "data", "lora", "train")) -> str:
        """A short stable hash of the named sections (stored in checkpoints and caches). Keys that
        say how to run rather than what to train (RUN_CONTROL_KEYS) are left out, so resuming a
        run does not make it look different from itself."""
        import hashlib

        payload = json.dumps(self.flat_settings(sections), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def flat_settings(self, sections: tuple[str, ...] = ("model", "data", "lora", "train")) -> dict[str, Any]:
        """`section.key` -> JSON value for the named sections, without RUN_CONTROL_KEYS."""
        flat = {}
        for s in sections:
            for k, v in getattr(self, s).model_dump(mode="json").items():
                if f"{s}.{k}" not in RUN_CONTROL_KEYS:
                    flat[f"{s}.{k}"] = v
        return flat


# How a run is started or placed, not what it trains: excluded from fingerprints and resume warnings.
RUN_CONTROL_KEYS = frozenset({"train.resume_from_checkpoint", "train.overwrite_output_dir", "model.threads",
                              "train.blocks_to_swap", "train.activation_offload"})  # the same numbers either way


SECTIONS: dict[str, type[_Section]] = {
    name: field.annotation  # type: ignore[misc]
    for name, field in UfoConfig.model_fields.items()
}


def _key_index() -> dict[str, list[str]]:
    """Bare key name -> the sections that define it (used to resolve `key=value` overrides)."""
    index: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        for key in cls.model_fields:
            index.setdefault(key, []).append(section)
    return index


def _all_dotted_keys() -> list[str]:
    return [f"{s}.{k}" for s, cls in SECTIONS.items() for k in cls.model_fields]


def _unknown_key_message(key: str, where: str) -> str:
    candidates = _all_dotted_keys() + list(_key_index()) + list(SECTIONS)
    if "." in key and key.split(".", 1)[0] not in SECTIONS:  # a typo'd section: suggest the section first
        section_hint = difflib.get_close_matches(key.split(".", 1)[0], list(SECTIONS), n=1, cutoff=0.5)
        if section_hint:
            fixed = f"{section_hint[0]}.{key.split('.', 1)[1]}"
            if fixed in _all_dotted_keys():
                return f"{where}: unknown config key '{key}'. Did you mean: {fixed}? Valid sections: {', '.join(SECTIONS)}."
            return f"{where}: unknown section '{key.split('.', 1)[0]}' in '{key}'. Did you mean: {section_hint[0]}? Valid sections: {', '.join(SECTIONS)}."
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"{where}: unknown config key '{key}'.{hint} Valid sections: {', '.join(SECTIONS)}."


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a plain nested dict (no validation yet)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config files must end in .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table of sections, got {type(data).__name__}")
    return data


def _parse_value(raw: str) -> Any:
    """Parse an override's value the way YAML reads a scalar or a flow list (`[1, 2]`)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _accepts_bool(cls: type[_Section], name: str) -> bool:
    import typing

    annotation = cls.model_fields[name].annotation
    return annotation is bool or bool in typing.get_args(annotation)


def apply_overrides(
    data: dict[str, Any], overrides: list[str], origins: dict[str, str] | None = None
) -> dict[str, Any]:
    """Apply `key=value` / `section.key=value` overrides to a nested config dict. `origins`
    (when given) receives `section.key` -> the override text, so a bad value blames it."""
    index = _key_index()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. learning_rate=2e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if "." in key:
            section, name = key.split(".", 1)
            if section not in SECTIONS or name not in SECTIONS[section].model_fields:
                raise ConfigError(_unknown_key_message(key, "command line"))
        else:
            sections = index.get(key)
            if not sections:
                raise ConfigError(_unknown_key_message(key, "command line"))
            if len(sections) > 1:
                options = ", ".join(f"{s}.{key}" for s in sections)
                raise ConfigError(f"command line: '{key}' exists in several sections; write one of: {options}")
            section, name = sections[0], key
        value = _parse_value(raw)
        if isinstance(value, bool) and not _accepts_bool(SECTIONS[section], name):
            value = raw.strip()  # YAML reads no/yes/on/off as booleans; mixed_precision=no means "no"
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"config section [{section}] must be a table")
        data[section][name] = value
        if origins is not None:
            origins[f"{section}.{name}"] = item
    return data


def _format_validation_error(exc: ValidationError, source: str, origins: dict[str, str] | None = None) -> str:
    origins = origins or {}
    errors = exc.errors()
    from_overrides = all(".".join(str(p) for p in e["loc"]) in origins for e in errors)
    lines = [f"{'command line' if from_overrides else source}: invalid configuration"]
    for err in errors:
        loc = ".".join(str(p) for p in err["loc"])
        if loc in origins:  # the override set it: blame the override, not the config file
            got = err.get("input")
            msg = err["msg"].replace("Value error, ", "")
            lines.append(f"  override '{origins[loc]}': {loc} {msg}" + (f" (got {got!r})" if not isinstance(got, dict) else ""))
            continue
        if err["type"] == "extra_forbidden":
            lines.append("  " + _unknown_key_message(loc, "key").replace("key: ", "", 1))
            continue
        got = err.get("input")
        got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
        msg = err["msg"].replace("Value error, ", "")
        lines.append(f"  {loc}: {msg}{got_text}")
    return "\n".join(lines)


def build_config(data: dict[str, Any], source: str = "config", origins: dict[str, str] | None = None) -> UfoConfig:
    """Validate a nested dict into a `UfoConfig`, turning pydantic errors into a readable message."""
    try:
        return UfoConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, origins)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> UfoConfig:
    """Read a config file (optional), apply `key=value` overrides, validate. The one entry point."""
    data = read_config_file(path) if path else {}
    origins: dict[str, str] = {}
    data = apply_overrides(data, list(overrides or []), origins)
    return build_config(data, source=str(path) if path else "command line", origins=origins)


def config_to_toml(cfg: UfoConfig) -> str:
    """Serialise a config (used to record the exact settings of a run next to its outputs)."""
    out: list[str] = []
    for section in SECTIONS:
        out.append(f"[{section}]")
        for key, value in getattr(cfg, section).model_dump(mode="json").items():
            if value is None:
                continue
            out.append(f"{key} = {json.dumps(value)}")
        out.append("")
    return "\n".join(out)
