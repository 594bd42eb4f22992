"""The model-adapter interface: everything the trainer and inference may ask of a model family.

A family implements `ModelAdapter` in one module under `models/` and is listed once in
`models/registry.py`. Trainer, data, inference, LoRA tools and CLI talk only to this interface,
so they never branch on model names (docs/adapters.md explains each hook and why it exists).

Conditioning flows as *named tensors* (finetrainers' pattern): `encode_text` and
`training_conditioning` return dicts whose keys `predict` understands, and the same definitions
feed the latent cache, so the trainer never knows which text encoders, masks or extra inputs
(inpaint latents, a first-frame mask, image embeddings) a family's transformer takes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ufo_video.models.base_pipeline import PipelineHooks
from ufo_video.models.info import Expert, ModelInfo, SizeRules

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
Conditioning = dict[str, torch.Tensor]


def cast_floats(tensors: Conditioning, device: torch.device | str, dtype: torch.dtype | None = None) -> Conditioning:
    """Named tensors moved to `device`, the floating ones cast to `dtype` (masks and ids keep theirs)."""
    return {k: v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
            for k, v in tensors.items()}  # fmt: skip


class ModelAdapter(PipelineHooks, ABC):
    """One model family. Class methods read folders; an instance holds loaded components."""

    family: ClassVar[str]
    #: a short human name for messages ("EasyAnimate V5.1", "Wan 2.1/2.2")
    display_name: ClassVar[str]
    #: the family's usual spatial and temporal VAE compression (an instance takes its own VAE's
    #: from `info.extra` when the adapter read them from the config) and the transformer's patch
    spatial_factor: int
    temporal_factor: int
    patch_size: ClassVar[int]
    #: the LoRA file format `save_lora` writes by default (a key of `lora.formats.FORMATS`)
    default_lora_format: ClassVar[str] = "kohya"
    #: the model's licence when it is not a permissive one: its name and a one-line note on its
    #: terms, shown by `model check` (None: nothing to flag)
    licence: ClassVar[str | None] = None
    #: the frame rate the family's pipelines generate at by default and its models condition on,
    #: where the model takes one (`generate` uses it when no fps is given); None: the generic default
    default_fps: ClassVar[int | None] = None
    #: the frame rate training conditions the model on (`train.fps` through `resolve_training_fps`,
    #: set by the trainer); None for a model without frame-rate conditioning
    training_fps: float | None = None

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
        self.training_fps = self.resolve_training_fps(None)  # the trainer sets train.fps's rate
        self.extra_components: dict[str, Any] = {
            k: v for k, v in components.items() if k not in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
        }

    @classmethod
    def resolve_training_fps(cls, fps: float | None) -> float | None:
        """`train.fps` for this family: the given rate, else `default_fps`; None for a model that
        takes no frame rate, which refuses a given one (it would change nothing)."""
        from ufo_video.errors import ConfigError

        if cls.default_fps is None:
            if fps is not None:
                raise ConfigError(f"train.fps={fps:g}: {cls.display_name} models take no frame rate; remove train.fps")
            return None
        return float(fps if fps is not None else cls.default_fps)

    def component(self, name: str) -> Any:
        """A loaded component by its folder name (None when not loaded)."""
        if name in COMPONENTS:
            return getattr(self, name)
        return self.extra_components.get(name)

    # ---- folders -------------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def detect(cls, path: Path) -> bool:
        """True when `path` looks like a model folder of this family (any layout it reads)."""

    @classmethod
    @abstractmethod
    def inspect(cls, path: Path) -> ModelInfo:
        """Layout, variant, tasks and size rules from configs only; `ModelLoadError` on a malformed folder."""

    @classmethod
    @abstractmethod
    def load(
        cls,
        path: Path,
        *,
        dtype: torch.dtype = torch.float32,
        components: tuple[str, ...] = COMPONENTS,
        info: ModelInfo | None = None,
    ) -> "ModelAdapter":
        """Load the requested components strictly (exact keys and shapes) onto the CPU. `info`: the
        folder's `inspect` result when the caller has it (a run inspects its folder once)."""

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

    @classmethod
    @abstractmethod
    def fingerprint_sources(cls, path: Path) -> dict[str, dict[str, Any]]:
        """What the latent cache's keys depend on, per kind ("video": latents and conditioning;
        "text": text conditioning), by label: ("text", config_path) hashes a config's text, ("files",
        folder, suffixes or None) the names, sizes and mtimes of weight files
        (`data.cache_keys.model_fingerprints`). A change in any of them makes the cache miss."""

    @classmethod
    def describe_folder(cls) -> str:
        """What a folder of this family holds, for 'not a model folder' messages."""
        return f"a {cls.display_name} model folder"

    @classmethod
    def check_trainable(cls, path: Path) -> None:
        """Refuse (a `UfoError`, one line) before anything loads when this family's models cannot be
        trained yet; `ufo-video train` calls it first. Default: trainable."""
        return None

    # ---- sizes, frames, tasks ------------------------------------------------------------------
    @property
    def rules(self) -> SizeRules:
        return self.info.rules or SizeRules(self.spatial_factor, self.temporal_factor, self.patch_size)

    def latent_frames(self, n_frames: int) -> int:
        return (n_frames - 1) // self.temporal_factor + 1

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.info.tasks

    @property
    def is_inpaint(self) -> bool:
        """True when the model takes image conditioning (so i2v and the conditioning mix train)."""
        return "i2v" in self.info.tasks

    # ---- encoders ------------------------------------------------------------------------
    #: the names `encode_text` returns (the latent cache stores one item per name, per caption)
    text_items: ClassVar[tuple[str, ...]]
    #: the components `encode_text` runs (loaded by `data cache` without the transformer)
    text_components: ClassVar[tuple[str, ...]] = ("text_encoder", "tokenizer")

    @abstractmethod
    def encode_text(self, prompts: list[str], device: torch.device | str) -> Conditioning:
        """Prompts -> the transformer's text conditioning as named tensors (`text_items`, each
        [B, ...]: hidden states of any number of encoders, masks, pooled outputs, connector
        outputs), exactly as the family's pipelines compute them."""

    @abstractmethod
    def random_text(self, batch: int, tokens: int, generator: torch.Generator, device: torch.device | str,
                    dtype: torch.dtype) -> Conditioning:
        """Random text conditioning with `encode_text`'s names and shapes for `tokens` tokens, from
        the loaded transformer's config (benchmarks and checks on random inputs)."""

    @abstractmethod
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, F, H, W] in [-1, 1] -> normalised latents [B, C, f, h, w]."""

    def encode_video_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior's mean and standard deviation, both normalised as `encode_video`'s
        latents are (the mean IS `encode_video`'s output): `mean + std * eps` is a posterior sample
        in latent units (`train.vae_latents = "sample"`, as the reference trains)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its VAE posterior")

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> pixels in [-1, 1]."""

    # ---- training conditioning (named tensors) -----------------------------------------------
    def conditioning_components(self, mode: str) -> tuple[str, ...]:
        """Components `training_conditioning` needs beyond the VAE (e.g. an image encoder)."""
        return ()

    def training_conditioning(
        self, pixels: torch.Tensor, latents: torch.Tensor, generators: list[torch.Generator], mode: str,
        start_image_noise: bool = False,
    ) -> tuple[Conditioning, list[str]]:
        """The transformer's extra inputs for a training batch, drawn per sample with its generator.

        `mode` is `train.train_mode`: "inpaint" = the family's image-conditioning mix (what i2v
        uses at inference), "normal" = text only. `start_image_noise`: add the noise the family's
        pipeline adds to given frames at inference, where it does (`start_image_noise_applies`).
        Returns the named tensors `predict` takes and the kind drawn for each sample (for logs).
        Text-only models return ({}, ["t2v", ...])."""
        return {}, ["t2v"] * latents.shape[0]

    def applied_train_mode(self, mode: str) -> str:
        """The `train.train_mode` this model really trains with: a model without image conditioning
        ignores "inpaint" and trains text-only ("normal"); summaries and file metadata say this."""
        return mode if self.is_inpaint else "normal"

    def start_image_noise_applies(self, mode: str) -> bool:
        """Whether this model's pipeline adds noise to the given (start/end) frames at inference, so
        training with `mode` should too (`train.start_image_noise = "model"`)."""
        return False

    def t2v_conditioning(self, latents: torch.Tensor) -> Conditioning:
        """What text-to-video feeds the transformer besides the noisy latents, for latents of this
        shape (benchmarks and checks on random inputs); models without text-to-video refuse."""
        if "t2v" not in self.info.tasks:
            from ufo_video.errors import UfoError

            raise UfoError(f"{self.info.path} ({self.info.variant}) has no text-to-video mode")
        return {}

    def cache_conditioning_items(self, mode: str, start_image_noise: bool = False) -> tuple[str, ...]:
        """Names of per-clip conditioning tensors the latent cache stores (empty: none needed).
        `start_image_noise` (`train.start_image_noise = "model"`): where the pipeline noises the
        given frames, the items must let `conditioning_from_cache` redraw that noise every step
        (e.g. the clean given frames instead of their finished latents)."""
        return ()

    def encode_cache_conditioning(self, pixels: torch.Tensor, items: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Per-clip cache items for ONE clip [1, 3, F, H, W] (without the batch dimension)."""
        return {}

    def cache_shared_items(self, mode: str) -> tuple[str, ...]:
        """Names of conditioning tensors that depend only on the clip's size (cached once per size)."""
        return ()

    def encode_cache_shared(self, item: str, frames: int, height: int, width: int) -> torch.Tensor:
        raise NotImplementedError(item)

    def cache_step_components(self, mode: str, start_image_noise: bool = False) -> tuple[str, ...]:
        """Components `conditioning_from_cache` runs at every step (empty: the cache holds finished
        tensors). The trainer loads them next to the transformer; the text encoders never."""
        return ()

    def conditioning_from_cache(
        self, items: dict[str, torch.Tensor], generators: list[torch.Generator], mode: str,
        start_image_noise: bool = False, pixel_shape: tuple[int, int, int] | None = None,
    ) -> tuple[Conditioning, list[str]]:
        """`training_conditioning` for a cached batch: `items` maps each cached item name to a
        [B, ...] tensor; the per-sample random choice is drawn from the same generators, in the
        same order, so cached and encoding runs draw alike. `pixel_shape` is the clip's (F, H, W);
        `start_image_noise` as in `training_conditioning` (with `cache_step_components` loaded)."""
        return {}, ["t2v"] * len(generators)

    def loss_mask(self, conditioning: Conditioning, latents: torch.Tensor) -> torch.Tensor | None:
        """Where the flow loss counts for a batch with this conditioning: a 0/1 tensor broadcastable
        to `latents` (e.g. 0 on latent frames the conditioning gives clean and whose prediction the
        pipeline discards), or None for every element (the default: a plain mean)."""
        return None

    # ---- training noise levels --------------------------------------------------------------
    def training_timesteps(self) -> torch.Tensor:
        """The grid the trainer's `uniform` weighting scheme draws from (uniformly by index):
        float32 timesteps on the 0..1000 scale, 1000 first. Built once per instance by
        `build_training_timesteps` (the model's own scheduler config), so every step reuses it."""
        grid = self.__dict__.get("_training_timesteps")
        if grid is None:
            grid = self.__dict__["_training_timesteps"] = self.build_training_timesteps()
        return grid

    @abstractmethod
    def build_training_timesteps(self) -> torch.Tensor:
        """This model's training timestep grid, from its scheduler config (the loaded scheduler's,
        or the folder's when it was not loaded: `models.timestep_grid.scheduler_config`). A family
        states why its grid matches how its model is sampled."""

    # ---- denoiser ------------------------------------------------------------------------
    @abstractmethod
    def predict(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: Conditioning,
        conditioning: Conditioning | None = None,
    ) -> torch.Tensor:
        """The transformer's flow prediction for noisy latents at `timesteps` (0..1000 scale);
        `text` is `encode_text`'s named tensors, `conditioning` the training/t2v conditioning's."""

    def experts(self) -> tuple[Expert, ...]:
        """The model's denoisers and their timestep ranges (one for single-transformer models)."""
        return (Expert("transformer"),)

    def select_expert(self, component: str | None) -> Expert:
        """The expert a training run trains (`train.expert`); `None` = the only one.

        The adapter swaps that expert into `self.transformer`, so the trainer, LoRA injection and
        saving work on it unchanged."""
        experts = {e.component: e for e in self.experts()}
        if component is None:
            if len(experts) > 1:
                from ufo_video.errors import ConfigError

                raise ConfigError(
                    f"{self.info.path} has {len(experts)} experts ({', '.join(experts)}); set train.expert to the one "
                    "this run trains (one UFO LoRA per expert, see README's Wan section)"
                )
            return next(iter(experts.values()))
        if component not in experts:
            from ufo_video.errors import ConfigError

            raise ConfigError(f"train.expert={component!r}: this model's experts are {', '.join(experts)}")
        return experts[component]

    def activate_expert(self, expert: Expert) -> None:
        """Put `expert`'s module in `self.transformer`, the slot the trainer, LoRA injection and
        saving work on (a no-op for the default expert)."""
        if expert.component != "transformer":
            self.transformer = self.expert_module(expert.component)

    # ---- components per stage ------------------------------------------------------------------
    def model_components(self) -> tuple[str, ...]:
        """Every component of this model (what inference loads): its experts, the VAE, the text
        components and the scheduler; a family adds what else it has (an image encoder)."""
        experts = tuple(e.component for e in self.experts())
        return (*experts, "vae", *self.text_components, "scheduler")

    def stage_components(self, stage: str, *, mode: str = "normal", start_image_noise: bool = False,
                         expert: str | None = None) -> tuple[str, ...]:
        """The components a stage loads, so generic code names none:

        - "infer": `model_components()`;
        - "train" (encoding every step, validation clips): all of them except the experts this run
          does not train (`expert` is `train.expert`);
        - "train_cached" (from the latent cache, no validation): the trained expert, the scheduler
          and what the cached conditioning runs every step (`cache_step_components`); never the text
          encoders or the VAE otherwise;
        - "cache_video" (`data cache`'s clip encoder): the VAE and `conditioning_components(mode)`;
        - "cache_text" (`data cache`'s caption encoder): `text_components`.
        """
        if stage == "infer":
            return self.model_components()
        if stage == "cache_video":
            return ("vae", *self.conditioning_components(mode))
        if stage == "cache_text":
            return tuple(self.text_components)
        trained = self.select_expert(expert).component
        others = {e.component for e in self.experts()} - {trained}
        if stage == "train":
            return tuple(c for c in self.model_components() if c not in others)
        if stage == "train_cached":
            return (trained, "scheduler", *self.cache_step_components(mode, start_image_noise=start_image_noise))
        raise ValueError(f"unknown stage {stage!r}")

    def expert_module(self, component: str) -> nn.Module:
        module = self.transformer if component == "transformer" else self.extra_components.get(component)
        if module is None:
            from ufo_video.errors import LoraError

            raise LoraError(f"the model has no loaded '{component}' (its experts: {', '.join(e.component for e in self.experts())})")
        return module

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

    @classmethod
    def names_model_path(cls) -> Path | None:
        """Shipped configs whose transformer supplies module names for LoRA tools without --model."""
        return None

    @classmethod
    def lora_formats(cls) -> tuple[str, ...]:
        """LoRA file formats this family reads and writes (keys of `lora.formats.FORMATS`)."""
        return ("kohya", "peft")

    @classmethod
    def lora_format_aliases(cls) -> dict[str, str]:
        """Format names this family writes as another format (e.g. a family whose tools read
        kohya-style keys with musubi's single-underscore prefix maps "kohya" to "musubi"). Default: none."""
        return {}

    @classmethod
    def lora_file_formats(cls) -> dict[str, Any]:
        """LoRA file formats this family adds to the generic ones in `lora.formats.FORMATS`: name ->
        an object with `reads_as` (the generic format whose names it uses and as which its files
        read back), `fold(modules)` (the modules as the file stores them, e.g. with alpha folded
        into `up`) and `tensors(modules, dtype)` (the file's tensors). Names may appear in
        `lora_formats` and `default_lora_format`. Default: none."""
        return {}

    # ---- tiny models -----------------------------------------------------------------------
    @classmethod
    def tiny_choices(cls) -> dict[str, tuple[str, ...]]:
        """`model make-tiny` choices: {"layout": (...), "variant": (...)}, defaults first."""
        raise NotImplementedError(f"{cls.family} has no tiny-model builder")

    @classmethod
    def make_tiny(cls, path: Path, *, layout: str, variant: str, seed: int = 0, sizes: dict[str, Any] | None = None) -> Path:
        """Write a tiny random model folder of this family (the same seed, the same tensors);
        `sizes` widens it where the family supports that (the CPU bench's presets)."""
        raise NotImplementedError(f"{cls.family} has no tiny-model builder")
