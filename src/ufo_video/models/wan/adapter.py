"""Wan 2.1 and Wan 2.2 on diffusers' classes — the second model family.

Variants (read from the folder's configs, never from its name):

| variant    | model                         | tasks     | denoisers                 | transformer input          |
|------------|-------------------------------|-----------|---------------------------|----------------------------|
| `t2v`      | 2.1 T2V 1.3B / 14B            | t2v       | transformer               | 16 noisy latents           |
| `i2v`      | 2.1 I2V 14B (CLIP image)      | i2v       | transformer               | 16 + 4 mask + 16 image lat |
| `a14b`     | 2.2 T2V A14B                  | t2v       | transformer, transformer_2| 16                         |
| `a14b-i2v` | 2.2 I2V A14B                  | i2v       | transformer, transformer_2| 36 (no CLIP)               |
| `ti2v`     | 2.2 TI2V 5B (z=48, 16x VAE)   | t2v, i2v  | transformer               | 48, per-token timesteps    |

Everything Wan-specific lives here and in this package's `layout.py` (names) / `tiny.py` (tiny
models): strict loading of the diffusers layout and of a single-file transformer with Wan's
original names, UMT5 text encoding exactly as `WanPipeline.encode_prompt`, per-channel latent
normalisation, the first-frame conditioning (one definition for training and the latent cache,
tested against what `WanImageToVideoPipeline` passes to its transformer), the two 2.2 experts and
their timestep ranges, LoRA names (ComfyUI / musubi / diffusers), and the pipelines.

Training choices (see README's Wan section): one UFO LoRA per expert, one run per expert
(`train.expert`): each 14B expert alone fills a GPU, and each LoRA is trained on its expert's
timesteps only. TI2V-5B trains text-to-video (its image-to-video is frame-0 replacement at
inference, which the base model already does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ufo_video.errors import UfoError
from ufo_video.models import timestep_grid
from ufo_video.models.wan import layout as wan_layout
from ufo_video.models.base import Conditioning, ModelAdapter
from ufo_video.models.info import Expert
from ufo_video.models.wan.folders import MAX_SEQUENCE_LENGTH, WanFolders



def _ftfy_available() -> None:
    """diffusers 0.42.1's `pipeline_wan_i2v` calls `ftfy.fix_text` unguarded (NameError without
    the package) while `pipeline_wan` guards it; ufo-video depends on `ftfy` so both pipelines
    clean prompts the same way. A clear error if an environment lacks it."""
    try:
        import ftfy  # noqa: F401
    except ImportError:
        raise UfoError("the Wan pipelines need the 'ftfy' package (pip install ftfy); it is a ufo-video dependency") from None


class WanAdapter(WanFolders, ModelAdapter):
    """Wan 2.1 / 2.2: WanTransformer3DModel, AutoencoderKLWan, UMT5, optional CLIP and second expert."""

    family = "wan"
    display_name = "Wan 2.1/2.2"
    spatial_factor = 8
    temporal_factor = 4
    patch_size = 2
    default_lora_format = "comfy"

    # ---- the components this instance holds ----------------------------------------------------
    @property
    def image_encoder(self) -> nn.Module | None:
        return self.extra_components.get("image_encoder")

    @property
    def uses_clip(self) -> bool:
        return bool(self.info.extra["uses_clip"])

    def experts(self) -> tuple[Expert, ...]:
        boundary = self.info.extra["boundary_ratio"]
        if boundary is None:
            return (Expert("transformer"),)
        b = float(boundary) * 1000.0
        # the pipelines use `transformer` where t >= boundary, `transformer_2` below
        return (Expert("transformer", b, 1000.0), Expert("transformer_2", 0.0, b))

    # ---- encoders ------------------------------------------------------------------------
    def _text_pipeline(self) -> Any:
        from diffusers import WanPipeline

        return WanPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=None, scheduler=None, transformer=None)

    #: UMT5's last hidden state [B, 512, D] (padding zeroed) and the real-token mask [B, 512]
    text_items = ("embeds", "mask")

    def encode_text(self, prompts: list[str], device: torch.device | str) -> Conditioning:
        """Exactly `WanPipeline.encode_prompt` (its own code: ftfy + whitespace cleaning, UMT5's last
        hidden state, real tokens kept and the rest ZEROED to 512). Wan's transformer has no text
        mask; the mask returned marks the real tokens for the cache and the logs."""
        assert self.tokenizer is not None and self.text_encoder is not None, "text encoder not loaded"
        _ftfy_available()
        embeds, _ = self._text_pipeline().encode_prompt(
            prompts, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH, device=device
        )
        mask = (embeds != 0).any(dim=-1).to(torch.long)
        return {"embeds": embeds, "mask": mask}

    def random_text(self, batch: int, tokens: int, generator: torch.Generator, device: torch.device | str,
                    dtype: torch.dtype) -> Conditioning:
        dim = int(self.transformer.config.text_dim)
        return {"embeds": torch.randn(batch, tokens, dim, generator=generator).to(device, dtype),
                "mask": torch.ones(batch, tokens, dtype=torch.long, device=device)}  # fmt: skip

    def _latent_stats(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(cfg.latents_mean).view(shape).to(latents.device, latents.dtype)
        std = torch.tensor(cfg.latents_std).view(shape).to(latents.device, latents.dtype)
        return mean, std

    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-channel normalised latents `(z - mean) / std` of the VAE's mode (the pipelines'
        `retrieve_latents(..., sample_mode="argmax")`)."""
        assert self.vae is not None, "VAE not loaded"
        pixels = pixels.to(device=self.vae.device, dtype=self.vae.dtype)
        latents = torch.cat([self.vae.encode(pixels[i : i + 1]).latent_dist.mode() for i in range(pixels.shape[0])])
        mean, std = self._latent_stats(latents)
        return (latents - mean) * (1.0 / std)

    def encode_video_posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.vae is not None, "VAE not loaded"
        pixels = pixels.to(device=self.vae.device, dtype=self.vae.dtype)
        dists = [self.vae.encode(pixels[i : i + 1]).latent_dist for i in range(pixels.shape[0])]
        latents = torch.cat([d.mode() for d in dists])
        mean, std = self._latent_stats(latents)
        return (latents - mean) * (1.0 / std), torch.cat([d.std for d in dists]) * (1.0 / std)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        assert self.vae is not None, "VAE not loaded"
        latents = latents.to(device=self.vae.device, dtype=self.vae.dtype)
        mean, std = self._latent_stats(latents)
        return self.vae.decode(latents / (1.0 / std) + mean, return_dict=False)[0].clamp(-1, 1)

    # ---- conditioning (one definition: training, cache; tested against the pipeline) ------------
    @staticmethod
    def _to_pil(frame: torch.Tensor) -> Any:
        """A [3, H, W] frame in [-1, 1] -> the PIL image the pipeline's CLIP processor is given."""
        from PIL import Image

        array = ((frame.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(array))

    def image_embeds(self, frames: torch.Tensor) -> torch.Tensor:
        """CLIP embedding of each first frame [B, 3, H, W] (`WanImageToVideoPipeline.encode_image`:
        the processor's resize/normalise, the vision model's second-to-last hidden state)."""
        encoder, processor = self.image_encoder, self.extra_components.get("image_processor")
        if encoder is None or processor is None:
            raise UfoError(f"{self.info.path}: the image encoder is not loaded (components must include 'image_encoder')")
        images = [self._to_pil(f) for f in frames]
        inputs = processor(images=images, return_tensors="pt").to(encoder.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(encoder.dtype)
        return encoder(**inputs, output_hidden_states=True).hidden_states[-2]

    def first_frame_condition(self, first: torch.Tensor, frames: int, last: torch.Tensor | None = None) -> torch.Tensor:
        """The I2V conditioning latents [B, 4 + z, f, h, w] for first frames [B, 3, H, W] in [-1, 1]:
        `cat([mask, normalised VAE latents of [first, zeros..., (last)]])`, the mask 1 on the
        latent frame(s) that are given — `WanImageToVideoPipeline.prepare_latents`'s construction."""
        b, _, height, width = first.shape
        zeros = first.new_zeros(b, 3, frames - 1 - (last is not None), height, width)
        parts = [first.unsqueeze(2), zeros] + ([last.unsqueeze(2)] if last is not None else [])
        latents = self.encode_video(torch.cat(parts, dim=2))
        t = self.temporal_factor
        f, h, w = latents.shape[2:]
        mask = torch.zeros(b, 1, frames, h, w, device=latents.device, dtype=latents.dtype)
        mask[:, :, 0] = 1
        if last is not None:
            mask[:, :, -1] = 1
        # the first pixel frame stands for a whole latent frame: repeat it t times, then fold time
        mask = torch.cat([mask[:, :, :1].repeat_interleave(t, dim=2), mask[:, :, 1:]], dim=2)
        mask = mask.view(b, -1, t, h, w).transpose(1, 2)
        return torch.cat([mask, latents], dim=1)

    def conditioning_components(self, mode: str) -> tuple[str, ...]:
        return ("image_encoder",) if self.uses_clip else ()

    def model_components(self) -> tuple[str, ...]:
        return (*super().model_components(), *self.conditioning_components("inpaint"))

    def _needs_image(self) -> bool:
        """I2V models always train with their first-frame input (they cannot run without it)."""
        return self.info.variant in ("i2v", "a14b-i2v")

    def training_conditioning(
        self, pixels: torch.Tensor, latents: torch.Tensor, generators: list[torch.Generator], mode: str,
        start_image_noise: bool = False,
    ) -> tuple[Conditioning, list[str]]:
        """I2V: the first frame as `WanImageToVideoPipeline` gives it (no start-image noise: the Wan
        pipelines add none, so `start_image_noise` changes nothing here)."""
        b = latents.shape[0]
        if not self._needs_image():
            return {}, ["t2v"] * b
        if mode != "inpaint":
            raise UfoError(
                f"train.train_mode={mode!r}: {self.info.path} is an image-to-video Wan model; it always takes its "
                "first frame, so train it with train_mode='inpaint' (first-frame conditioning)"
            )
        first = pixels[:, :, 0]
        cond: Conditioning = {"latent_condition": self.first_frame_condition(first, pixels.shape[2]).to(latents.dtype)}
        if self.uses_clip:
            cond["image_embeds"] = self.image_embeds(first)
        return cond, ["first"] * b

    def cache_conditioning_items(self, mode: str, start_image_noise: bool = False) -> tuple[str, ...]:
        if not self._needs_image():
            return ()
        return ("latent_condition", "image_embeds") if self.uses_clip else ("latent_condition",)

    def encode_cache_conditioning(self, pixels: torch.Tensor, items: tuple[str, ...]) -> dict[str, torch.Tensor]:
        cond, _ = self.training_conditioning(pixels, pixels.new_zeros(pixels.shape[0]), [], "inpaint")
        return {k: v[0] for k, v in cond.items() if k in items}

    def conditioning_from_cache(
        self, items: dict[str, torch.Tensor], generators: list[torch.Generator], mode: str,
        start_image_noise: bool = False, pixel_shape: tuple[int, int, int] | None = None,
    ) -> tuple[Conditioning, list[str]]:
        """The cached first-frame tensors (no start-image noise to redraw: the pipelines add none)."""
        names = self.cache_conditioning_items(mode)
        if names and mode != "inpaint":
            self.training_conditioning(items["latent"][:0], items["latent"], [], mode)  # the same refusal
        return {k: items[k] for k in names}, (["first"] if names else ["t2v"]) * len(generators)

    def build_training_timesteps(self) -> torch.Tensor:
        """The 1000-step flow grid shifted by the scheduler's static `flow_shift` (3.0; 5.0 for
        TI2V-5B). Why shifted: Wan samples with UniPC on flow sigmas, and its `set_timesteps` maps
        every sampling sigma s to flow_shift*s/(1+(flow_shift-1)*s), with no dynamic
        (resolution-dependent) shift. So the sampler's sigmas are evenly spaced values pushed towards
        high noise by that map; the same map on the evenly spaced training grid gives training
        draws the density of the sampler's steps (an unshifted grid would train low noise levels
        as often as high ones, which the sampler visits less). A folder with a FlowMatchEulerDiscreteScheduler
        trains on that scheduler's own construction grid, as EasyAnimate does."""
        cfg = timestep_grid.scheduler_config(self)
        if cfg.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
            return timestep_grid.flow_match_grid(cfg)
        if not cfg.get("use_flow_sigmas") or cfg.get("use_dynamic_shifting") or cfg.get("shift_terminal"):
            raise UfoError(
                f"{self.info.path / 'scheduler'}: {cfg.get('_class_name')} without use_flow_sigmas, or with dynamic "
                "shifting or shift_terminal, is not how Wan samples; no training timestep grid can be derived from it"
            )
        return timestep_grid.shifted_flow_grid(cfg.get("num_train_timesteps", 1000), cfg.get("flow_shift", 1.0))

    def swap_blocks(self, transformer: nn.Module) -> nn.ModuleList:
        """Wan's blocks: `blocks` (diffusers' WanTransformer3DModel, each expert of Wan 2.2 A14B alike)."""
        return transformer.blocks

    # ---- denoiser ------------------------------------------------------------------------
    def predict(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: Conditioning,
        conditioning: Conditioning | None = None,
    ) -> torch.Tensor:
        """The expert in `self.transformer` on `cat([noisy, latent_condition])` (I2V), with the CLIP
        embedding as `encoder_hidden_states_image` (2.1 I2V) and, for TI2V's `expand_timesteps`,
        the timestep given per token as `WanPipeline` does."""
        assert self.transformer is not None, "transformer not loaded"
        cond = conditioning or {}
        hidden = noisy_latents
        if "latent_condition" in cond:
            hidden = torch.cat([noisy_latents, cond["latent_condition"].to(noisy_latents.dtype)], dim=1)
        elif self._needs_image():
            raise ValueError("this Wan I2V model needs 'latent_condition' (its first-frame input)")
        if self.info.extra["expand_timesteps"]:
            f, h, w = noisy_latents.shape[2:]
            tokens = f * (h // self.rules.patch_size) * (w // self.rules.patch_size)
            timesteps = timesteps.view(-1, 1).expand(-1, tokens)
        return self.transformer(
            hidden_states=hidden,
            timestep=timesteps,
            encoder_hidden_states=text["embeds"],
            encoder_hidden_states_image=cond.get("image_embeds"),
            return_dict=False,
        )[0]

    # ---- LoRA ----------------------------------------------------------------------------
    @classmethod
    def lora_target_presets(cls) -> dict[str, list[str]]:
        """Block linears, as the peers train Wan (and what every LoRA format diffusers reads covers).
        `attn2.add_k_proj` / `add_v_proj` are 2.1 I2V's image stream (absent elsewhere)."""
        attention = [f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")]
        attention += ["attn2.add_k_proj", "attn2.add_v_proj"]
        return {"attention": attention, "all-linear": attention + ["ffn.net.0.proj", "ffn.net.2"]}

    @classmethod
    def to_original_module_name(cls, name: str) -> str:
        try:
            return wan_layout.diffusers_to_original_module(name)
        except wan_layout.UnknownWanKeyError:
            return name  # a module no LoRA format names (e.g. a norm); matching fails on it clearly

    @classmethod
    def from_original_module_name(cls, name: str) -> str:
        return wan_layout.original_to_diffusers_module(name)

    @classmethod
    def lora_formats(cls) -> tuple[str, ...]:
        return ("comfy", "musubi", "peft")

    @classmethod
    def lora_format_aliases(cls) -> dict[str, str]:
        """Wan has no kohya layout of its own: the kohya-style keys musubi-tuner writes and ComfyUI
        reads natively are `lora_unet_blocks_0_...` (musubi's); EasyAnimate's `lora_unet__` prefix
        loads in ComfyUI only through a legacy special case."""
        return {"kohya": "musubi"}

    @classmethod
    def tiny_choices(cls) -> dict[str, tuple[str, ...]]:
        from ufo_video.models.wan.tiny import VARIANTS

        return {"layout": ("diffusers", "single-file"), "variant": VARIANTS}

    @classmethod
    def make_tiny(cls, path: Path, *, layout: str, variant: str, seed: int = 0, sizes: dict[str, Any] | None = None) -> Path:
        from ufo_video.models.wan.tiny import make_tiny_wan

        if sizes:
            raise UfoError("tiny Wan models come in one size (models/wan/tiny.py); `sizes` is not supported")
        return make_tiny_wan(path, variant=variant, seed=seed, layout=layout)  # type: ignore[arg-type]

    @classmethod
    def names_model_path(cls) -> Path:
        """Wan 2.1 I2V-14B's configs: their 40 blocks hold every module name of every Wan variant's
        blocks (T2V and 2.2 lack only the image stream), so LoRAs of any size resolve by name."""
        return Path(__file__).resolve().parents[2] / "assets" / "wan-configs" / "wan2.1-i2v-14b-480p"

    # ---- pipelines -----------------------------------------------------------------------
    def pipeline(self, task: str = "t2v") -> Any:
        """`WanPipeline` for text-to-video, `WanImageToVideoPipeline` for image-to-video, over the
        loaded components (both experts and the boundary for 2.2 A14B; `expand_timesteps` for TI2V)."""
        from diffusers import WanImageToVideoPipeline, WanPipeline

        parts: dict[str, Any] = dict(
            tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae, scheduler=self.scheduler,
            transformer=self.transformer, transformer_2=self.extra_components.get("transformer_2"),
            boundary_ratio=self.info.extra["boundary_ratio"], expand_timesteps=self.info.extra["expand_timesteps"],
        )  # fmt: skip
        if task == "t2v":
            return WanPipeline(**parts)
        _ftfy_available()
        return WanImageToVideoPipeline(
            image_encoder=self.image_encoder, image_processor=self.extra_components.get("image_processor"), **parts
        )

    def pipeline_inputs(self, task: str, start: Any, end: Any, frames: int, size: tuple[int, int]) -> dict[str, Any]:
        if task == "t2v":
            return {}
        return {"image": start, **({"last_image": end} if end is not None else {})}

    def pipeline_call_conditioning(self, call: dict[str, Any]) -> Conditioning:
        """`predict`'s inverse: the first-frame input is the channels after the noisy latents in
        `hidden_states` (I2V), the CLIP embedding `encoder_hidden_states_image` (2.1 I2V)."""
        out = {"embeds": call["encoder_hidden_states"]}
        z = self.info.latent_channels
        if call["hidden_states"].shape[1] > z:
            out["latent_condition"] = call["hidden_states"][:, z:]
        if call.get("encoder_hidden_states_image") is not None:
            out["image_embeds"] = call["encoder_hidden_states_image"]
        return out
