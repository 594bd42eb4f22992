"""EasyAnimate V5.1 (InP and T2V) on diffusers' classes — the first model family.

Everything EasyAnimate-specific lives here and in its helpers in this package
(`transformer.py`, `layout.py`, `masks.py`, `cache.py`): loading both on-disk layouts strictly, text
encoding with the Qwen2-VL chat template, VAE encode/decode, the inpaint conditioning (training
masks, latent-cache items), the transformer call, LoRA target presets, and pipeline construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ufo_video.errors import ModelLoadError
from ufo_video.models.easyanimate import cache, layout, masks
from ufo_video.models import timestep_grid
from ufo_video.models.components import folder_has_weights, load_tokenizer, load_transformers_strict
from ufo_video.models.base import COMPONENTS, Conditioning, ModelAdapter
from ufo_video.models.info import ModelInfo, SizeRules
from ufo_video.models.weights import (
    build_on_meta,
    find_weight_files,
    load_strict,
    read_header_shapes,
)

# diffusers (and this package's transformer subclass of its class) is imported inside the methods
# that build or run a model: its import alone costs seconds, and the registry, detection and the
# LoRA tools' name mapping need none of it (tests/test_cli_fast.py checks which commands import it)
MAX_SEQUENCE_LENGTH = 256
TRANSFORMER_CLASS_NAMES = {"EasyAnimateTransformer3DModel"}


class EasyAnimateAdapter(ModelAdapter):
    """EasyAnimate V5.1: MMDiT transformer, magvit VAE (8x spatial, 4x temporal), Qwen2-VL text."""

    family = "easyanimate"
    display_name = "EasyAnimate V5.1"
    spatial_factor = 8
    temporal_factor = 4
    patch_size = 2

    # ---- folders -------------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        cfg = path / "transformer" / "config.json"
        if not cfg.is_file():
            return False
        try:
            data = layout.read_json(cfg)
        except ModelLoadError:
            return False
        name = data.get("_class_name", "")
        return name in TRANSFORMER_CLASS_NAMES or "mmdit_layers" in data

    @classmethod
    def inspect(cls, path: Path) -> ModelInfo:
        path = Path(path)
        configs_only = not cls.has_weights(path)
        # a configs-only folder (checking sizes before a download) needs just the model configs
        needed = ("transformer", "vae") if configs_only else COMPONENTS
        for sub in needed:
            if not (path / sub).is_dir():
                raise ModelLoadError(f"{path}: missing subfolder '{sub}/' (an EasyAnimate model has {', '.join(COMPONENTS)})")
        tcfg = cls._transformer_config(path)
        vcfg = cls._vae_config(path)
        latent = int(vcfg.get("latent_channels", 16))
        in_ch = int(tcfg.get("in_channels") or latent)
        if in_ch == 2 * latent + 1:
            variant = "inp"
        elif in_ch == latent:
            variant = "t2v"
        else:
            raise ModelLoadError(
                f"{path / 'transformer' / 'config.json'}: in_channels={in_ch} fits neither T2V ({latent}) "
                f"nor InP (2*{latent}+1={2 * latent + 1}) for the VAE's latent_channels={latent}"
            )
        kind = "configs-only" if configs_only else layout.detect_layout(path)
        compression = layout.vae_compression(vcfg)
        extra = {"transformer_config": tcfg, **compression}
        rules = SizeRules(compression["spatial_factor"], compression["temporal_factor"], cls.patch_size, vae_name="VAE")
        tasks = ("t2v", "i2v", "flf2v") if variant == "inp" else ("t2v",)
        return ModelInfo(cls.family, path, kind, variant, latent, extra=extra, tasks=tasks, rules=rules)

    @classmethod
    def describe_folder(cls) -> str:
        return "transformer/config.json with an EasyAnimateTransformer3DModel config"

    @classmethod
    def fingerprint_sources(cls, path: Path) -> dict[str, dict[str, Any]]:
        """What the latent cache's keys depend on: the latents and conditioning on the transformer
        and VAE configs and the VAE weights; the text embeddings on the text encoder and tokenizer."""
        return {
            "video": {"transformer_config": ("text", path / "transformer" / "config.json"),
                      "vae_config": ("text", path / "vae" / "config.json"),
                      "vae_weights": ("files", path / "vae", (".safetensors", ".json"))},
            "text": {"text_encoder": ("files", path / "text_encoder", None),
                     "tokenizer": ("files", path / "tokenizer", None)},
        }  # fmt: skip

    @classmethod
    def _transformer_config(cls, path: Path) -> dict[str, Any]:
        from diffusers import EasyAnimateTransformer3DModel

        data = layout.read_json(path / "transformer" / "config.json")
        return layout.diffusers_init_kwargs(data, EasyAnimateTransformer3DModel)

    @classmethod
    def _vae_config(cls, path: Path) -> dict[str, Any]:
        from diffusers import AutoencoderKLMagvit

        data = layout.read_json(path / "vae" / "config.json")
        return layout.diffusers_init_kwargs(data, AutoencoderKLMagvit)

    @classmethod
    def _renamer(cls, kind: str):
        return layout.original_to_diffusers if kind == "original" else None

    @classmethod
    def build_meta(cls, path: Path) -> dict[str, nn.Module]:
        from diffusers import AutoencoderKLMagvit

        from ufo_video.models.easyanimate.transformer import UfoEasyAnimateTransformer

        path = Path(path)
        tcfg, vcfg = cls._transformer_config(path), cls._vae_config(path)
        modules: dict[str, nn.Module] = {
            "transformer": build_on_meta(lambda: UfoEasyAnimateTransformer(**tcfg)),
            "vae": build_on_meta(lambda: AutoencoderKLMagvit(**vcfg)),
        }
        te_cfg_path = path / "text_encoder" / "config.json"
        if te_cfg_path.is_file():
            from transformers import AutoConfig, AutoModelForImageTextToText

            te_cfg = AutoConfig.from_pretrained(str(path / "text_encoder"))
            modules["text_encoder"] = build_on_meta(lambda: AutoModelForImageTextToText.from_config(te_cfg))
        return modules

    @classmethod
    def has_weights(cls, path: Path) -> bool:
        return folder_has_weights(Path(path), ("transformer", "vae", "text_encoder"))

    @classmethod
    def weight_shapes(cls, path: Path) -> dict[str, dict[str, tuple[int, ...]]]:
        path = Path(path)
        rename = cls._renamer(layout.detect_layout(path)) or (lambda k: k)
        out = {}
        for comp in ("transformer", "vae"):
            headers = read_header_shapes(find_weight_files(path / comp))
            out[comp] = {rename(k) if comp == "transformer" else k: v[0] for k, v in headers.items()}
        return out

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        dtype: torch.dtype = torch.float32,
        components: tuple[str, ...] = COMPONENTS,
        info: ModelInfo | None = None,
    ) -> "EasyAnimateAdapter":
        from diffusers import AutoencoderKLMagvit

        from ufo_video.models.easyanimate.transformer import UfoEasyAnimateTransformer

        path = Path(path)
        info = info or cls.inspect(path)
        loaded: dict[str, Any] = {}
        if "transformer" in components:
            tcfg = cls._transformer_config(path)
            loaded["transformer"] = load_strict(
                lambda: UfoEasyAnimateTransformer(**tcfg),
                path / "transformer",
                rename=cls._renamer(info.layout),
                dtype=dtype,
            )
        if "vae" in components:
            vcfg = cls._vae_config(path)
            vae = load_strict(lambda: AutoencoderKLMagvit(**vcfg), path / "vae", dtype=dtype)
            loaded["vae"] = layout.with_vae_quirk(vae)
        if "text_encoder" in components:
            loaded["text_encoder"] = cls._load_text_encoder(path / "text_encoder", dtype)
        if "tokenizer" in components:
            loaded["tokenizer"] = cls._load_tokenizer(path / "tokenizer")
        if "scheduler" in components:
            loaded["scheduler"] = cls._load_scheduler(path / "scheduler")
        return cls(info, loaded)

    @staticmethod
    def _load_text_encoder(folder: Path, dtype: torch.dtype) -> nn.Module:
        """Qwen2-VL through transformers, strictly."""
        from transformers import AutoModelForImageTextToText

        return load_transformers_strict(folder, AutoModelForImageTextToText, dtype, "text encoder")

    @staticmethod
    def _load_tokenizer(folder: Path) -> Any:
        tok = load_tokenizer(folder)
        if not getattr(tok, "chat_template", None):
            raise ModelLoadError(f"{folder}: the tokenizer has no chat_template (EasyAnimate prompts use Qwen2-VL's)")
        return tok

    @staticmethod
    def _load_scheduler(folder: Path) -> Any:
        from diffusers import FlowMatchEulerDiscreteScheduler

        cfg = layout.read_json(folder / "scheduler_config.json")
        return FlowMatchEulerDiscreteScheduler.from_config(cfg)

    # ---- encoders ------------------------------------------------------------------------
    #: the text encoder's hidden states [B, 256, D] and its attention mask [B, 256]
    text_items = ("embeds", "mask")

    def encode_text(self, prompts: list[str], device: torch.device | str) -> Conditioning:
        """Same computation as the pipelines' `encode_prompt`: chat template, right padding to
        256 tokens, the text encoder's second-to-last hidden state."""
        assert self.tokenizer is not None and self.text_encoder is not None, "text encoder not loaded"
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": [{"type": "text", "text": p}]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for p in prompts
        ]
        tokens = self.tokenizer(
            text=texts,
            padding="max_length",
            max_length=MAX_SEQUENCE_LENGTH,
            truncation=True,
            return_attention_mask=True,
            padding_side="right",
            return_tensors="pt",
        ).to(device)
        hidden = self.text_encoder(
            input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True
        ).hidden_states[-2]
        return {"embeds": hidden, "mask": tokens.attention_mask}

    def random_text(self, batch: int, tokens: int, generator: torch.Generator, device: torch.device | str,
                    dtype: torch.dtype) -> Conditioning:
        dim = int(self.transformer.config.text_embed_dim)
        return {"embeds": torch.randn(batch, tokens, dim, generator=generator).to(device, dtype),
                "mask": torch.ones(batch, tokens, dtype=torch.long, device=device)}  # fmt: skip

    @property
    def scaling_factor(self) -> float:
        assert self.vae is not None
        return float(self.vae.config.scaling_factor)

    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        assert self.vae is not None, "VAE not loaded"
        pixels = pixels.to(device=self.vae.device, dtype=self.vae.dtype)
        latents = [self.vae.encode(pixels[i : i + 1])[0].mode() for i in range(pixels.shape[0])]
        return torch.cat(latents) * self.scaling_factor

    def encode_video_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.vae is not None, "VAE not loaded"
        pixels = pixels.to(device=self.vae.device, dtype=self.vae.dtype)
        dists = [self.vae.encode(pixels[i : i + 1])[0] for i in range(pixels.shape[0])]
        mean = torch.cat([d.mode() for d in dists]) * self.scaling_factor  # exactly encode_video's
        return mean, torch.cat([d.std for d in dists]) * self.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        assert self.vae is not None, "VAE not loaded"
        latents = latents.to(device=self.vae.device, dtype=self.vae.dtype) / self.scaling_factor
        return self.vae.decode(latents, return_dict=False)[0].clamp(-1, 1)

    def inpaint_conditioning(
        self, pixels: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`cat([1 - mask at latent size, VAE(masked pixels)]) * scaling`, as the inpaint pipeline
        builds it: masked pixels are set to -1 before encoding; the first frame's mask is resized
        alone because the causal VAE encodes the first frame alone. `noise` (same shape as
        `pixels`) is added to the kept pixels only, as the pipeline's `add_noise_to_reference_video`
        does when the transformer config sets `add_noise_in_inpaint_model`."""
        from diffusers.pipelines.easyanimate.pipeline_easyanimate_inpaint import resize_mask

        mask = mask.to(pixels.dtype)
        masked = pixels * (mask < 0.5) + (-1.0) * (mask >= 0.5)
        if noise is not None:
            masked = masked + torch.where(masked == -1, torch.zeros_like(masked), noise.to(masked))
        masked_latents = self.encode_video(masked)
        mask_latents = resize_mask(1 - mask.to(masked_latents), masked_latents, True) * self.scaling_factor
        return torch.cat([mask_latents, masked_latents], dim=1)

    # ---- training conditioning -------------------------------------------------------------
    def _in_channels(self) -> int:
        return int(self.info.extra["transformer_config"].get("in_channels") or self.info.latent_channels)

    def training_conditioning(
        self, pixels: torch.Tensor, latents: torch.Tensor, generators: list[torch.Generator], mode: str,
        start_image_noise: bool = False,
    ) -> tuple[Conditioning, list[str]]:
        """InP: a random mask per sample (`masks`) in "inpaint" mode, zeros (what
        text-to-video feeds) in "normal" mode; T2V models take no conditioning. With
        `start_image_noise` (and the model's `add_noise_in_inpaint_model`), the kept pixels get the
        reference's noise before encoding."""
        if not self.is_inpaint:
            return {}, ["t2v"] * latents.shape[0]
        if mode == "inpaint":
            noisy = start_image_noise and self.start_image_noise_applies(mode)
            cond, kinds = masks.build_conditioning(self, pixels, generators, start_image_noise=noisy)
            return {"inpaint_latents": cond}, kinds
        return {"inpaint_latents": masks.zero_conditioning(self._in_channels(), latents)}, ["t2v"] * latents.shape[0]

    def start_image_noise_applies(self, mode: str) -> bool:
        """The inpaint pipeline adds noise to the given frames when the transformer config says
        `add_noise_in_inpaint_model` (V5.1 InP: true)."""
        return self.is_inpaint and mode == "inpaint" and bool(self.info.extra["transformer_config"].get("add_noise_in_inpaint_model"))

    def t2v_conditioning(self, latents: torch.Tensor) -> Conditioning:
        """InP text-to-video: zero inpaint latents (mask channel + masked latents), as the pipeline."""
        if not self.is_inpaint:
            return {}
        return {"inpaint_latents": masks.zero_conditioning(self._in_channels(), latents)}

    # ---- latent cache (`cache`: clean given frames when the start-image noise applies) ------
    def cache_conditioning_items(self, mode: str, start_image_noise: bool = False) -> tuple[str, ...]:
        if not (self.is_inpaint and mode == "inpaint"):
            return ()
        return cache.clip_items(start_image_noise and self.start_image_noise_applies(mode))

    def encode_cache_conditioning(self, pixels: torch.Tensor, items: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return cache.encode_items(self, pixels, items)

    def cache_shared_items(self, mode: str) -> tuple[str, ...]:
        return (masks.SHARED_ITEM,) if self.is_inpaint and mode == "inpaint" else ()

    def encode_cache_shared(self, item: str, frames: int, height: int, width: int) -> torch.Tensor:
        return cache.encode_shared(self, item, frames, height, width)

    def cache_step_components(self, mode: str, start_image_noise: bool = False) -> tuple[str, ...]:
        """With the start-image noise, each cached step noises and VAE-encodes the given frames."""
        return ("vae",) if start_image_noise and self.start_image_noise_applies(mode) else ()

    def conditioning_from_cache(
        self, items: dict[str, torch.Tensor], generators: list[torch.Generator], mode: str,
        start_image_noise: bool = False, pixel_shape: tuple[int, int, int] | None = None,
    ) -> tuple[Conditioning, list[str]]:
        if not self.is_inpaint:
            return {}, ["t2v"] * len(generators)
        if mode != "inpaint":
            return self.training_conditioning(items["latent"][:0], items["latent"], generators, mode)
        noisy = start_image_noise and self.start_image_noise_applies(mode)
        return cache.conditioning(self, items, generators, noisy, pixel_shape)

    def build_training_timesteps(self) -> torch.Tensor:
        """The scheduler's own grid at construction. V5.1's FlowMatchEulerDiscreteScheduler has
        use_dynamic_shifting=true, so that grid is unshifted ({1000, 999, ..., 1}): the UFO
        reference trains on it and shifts by resolution only when sampling."""
        return timestep_grid.flow_match_grid(timestep_grid.scheduler_config(self))

    # ---- denoiser ------------------------------------------------------------------------
    def predict(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: Conditioning,
        conditioning: Conditioning | None = None,
    ) -> torch.Tensor:
        assert self.transformer is not None, "transformer not loaded"
        inpaint_latents = (conditioning or {}).get("inpaint_latents")
        if self.is_inpaint and inpaint_latents is None:
            raise ValueError("the InP model needs inpaint_latents (zeros for text-to-video)")
        return self.transformer(
            noisy_latents,
            timesteps,
            encoder_hidden_states=text["embeds"],
            inpaint_latents=inpaint_latents,
            return_dict=False,
        )[0]

    # ---- LoRA ----------------------------------------------------------------------------
    @classmethod
    def lora_target_presets(cls) -> dict[str, list[str]]:
        attention = [
            "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
            "attn1.add_q_proj", "attn1.add_k_proj", "attn1.add_v_proj", "attn1.to_add_out",
        ]  # fmt: skip
        block_linear = attention + [
            "norm1.linear", "norm2.linear", "ff.net.0.proj", "ff.net.2", "txt_ff.net.0.proj", "txt_ff.net.2",
        ]  # fmt: skip
        outer = ["time_embedding.linear_1", "time_embedding.linear_2", "text_proj.1", "text_proj", "norm_out.linear", "proj_out"]
        return {"attention": attention, "all-linear": block_linear + outer}

    @classmethod
    def tiny_choices(cls) -> dict[str, tuple[str, ...]]:
        return {"layout": ("diffusers", "original"), "variant": ("inp", "t2v")}

    @classmethod
    def make_tiny(cls, path: Path, *, layout: str, variant: str, seed: int = 0, sizes: dict[str, Any] | None = None) -> Path:
        from ufo_video.models.easyanimate.tiny import make_tiny

        return make_tiny(path, layout=layout, variant=variant, seed=seed, sizes=sizes)  # type: ignore[arg-type]

    @classmethod
    def names_model_path(cls) -> Path:
        """The bundled V5.1 12B configs: every V5.1 size shares their module names up to its block count."""
        return Path(__file__).resolve().parents[2] / "assets" / "easyanimate-v5.1-12b-inp-configs"

    @classmethod
    def to_original_module_name(cls, name: str) -> str:
        return layout.diffusers_to_original(name)

    @classmethod
    def from_original_module_name(cls, name: str) -> str:
        return layout.original_to_diffusers(name)

    # ---- pipelines -----------------------------------------------------------------------
    def pipeline(self, task: str = "t2v") -> Any:
        """InP models run t2v and i2v through the inpaint pipeline; T2V models through the t2v one."""
        from diffusers import EasyAnimateInpaintPipeline, EasyAnimatePipeline

        cls = EasyAnimateInpaintPipeline if self.is_inpaint else EasyAnimatePipeline
        return cls(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            transformer=self.transformer,
            scheduler=self.scheduler,
        )

    def pipeline_inputs(self, task: str, start: Any, end: Any, frames: int, size: tuple[int, int]) -> dict[str, Any]:
        """Image-to-video: the start image is kept as frame 0 (and the end image as the last frame)
        through the inpaint pipeline's video + mask inputs, built by diffusers' own helper."""
        if task == "t2v":
            return {}
        from diffusers.pipelines.easyanimate.pipeline_easyanimate_inpaint import get_image_to_video_latent

        video, mask = get_image_to_video_latent(start, end, frames, size)
        return {"video": video, "mask_video": mask}

    def pipeline_call_conditioning(self, call: dict[str, Any]) -> Conditioning:
        """`predict` passes the text as `encoder_hidden_states` and the InP input under its own name."""
        out = {"embeds": call["encoder_hidden_states"]}
        if call.get("inpaint_latents") is not None:
            out["inpaint_latents"] = call["inpaint_latents"]
        return out

    def noiseless_pipeline_inputs(self, task: str) -> dict[str, Any]:
        """The inpaint pipeline's start-image noise (`add_noise_in_inpaint_model`) has its strength
        as a call argument."""
        return {"noise_aug_strength": 0.0} if task != "t2v" and self.start_image_noise_applies("inpaint") else {}

    def pipeline_negative_prompt(self, negative_prompt: str | None) -> str:
        """diffusers 0.42.1: every EasyAnimate pipeline's `encode_prompt` iterates over
        `negative_prompt` when guidance > 1, so `None` raises "TypeError: 'NoneType' object is not
        iterable". An empty negative prompt is what "no negative prompt" means there, so pass "".
        (tests/test_infer.py checks the raw pipeline still raises; drop this when it no longer does.)"""
        return "" if negative_prompt is None else negative_prompt

    def swap_blocks(self, transformer: nn.Module) -> nn.ModuleList:
        """EasyAnimate's blocks: `transformer_blocks` (diffusers' EasyAnimateTransformer3DModel runs
        them in order, checkpointing each one)."""
        return transformer.transformer_blocks

    def step_cache_blocks(self) -> Any:
        """diffusers 0.42.1 does not list `EasyAnimateTransformerBlock` in the registry its cache
        hooks use to find a block's outputs; it returns (hidden_states, encoder_hidden_states)."""
        from diffusers.models.transformers.transformer_easyanimate import EasyAnimateTransformerBlock

        return EasyAnimateTransformerBlock, {"return_hidden_states_index": 0, "return_encoder_hidden_states_index": 1}
