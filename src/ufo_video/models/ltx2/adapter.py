"""LTX-2 / LTX-2.3 (Lightricks) on diffusers' classes — the third model family, for generation.

What works: detection and configs-only inspection of diffusers' `Lightricks/LTX-2` folders (base and
distilled checkpoints, 2.0 and 2.3; folders.py), strict loading of all eight components, `model
check` (parameter counts from the shipped configs), text encoding exactly as the pipelines do it
(Gemma 3's stacked hidden states through the text connectors), generation through `LTX2Pipeline` /
`LTX2ImageToVideoPipeline` with the pipelines' own defaults for this model (see `pipeline_defaults`),
LoRA files in the format both ComfyUI and diffusers load (lora_format.py), tiny models (tiny.py).

Generation is the joint audio-video pass of the pipeline, unchanged: audio noise is drawn right
after the video noise from the same generator, audio and video are denoised together and both are
decoded (the audio tokens change the video, so skipping them would give other frames); ufo-video
keeps the frames and drops the audio.

Training (training.py): a UFO LoRA through the generic trainer, text-to-video (`train_mode =
"normal"`) and image-to-video (`"inpaint"`: the first frame as `LTX2ImageToVideoPipeline` gives
it), with a silent audio stream fed as SimpleTuner feeds it (docs/ltx2-notes.md says why). The
stages load the generic component sets over all eight parts: "train" everything (validation runs
the pipelines), "train_cached" the transformer and scheduler, "cache_video" the VAE, "cache_text"
Gemma 3, its tokenizer and the connectors (whose outputs the text cache stores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ufo_video.errors import UfoError
from ufo_video.models import timestep_grid
from ufo_video.models.base import Conditioning, ModelAdapter
from ufo_video.models.ltx2 import lora_format
from ufo_video.models.ltx2.folders import ALL_PARTS, LTX2Folders
from ufo_video.models.ltx2.training import LTX2Training

#: what the pipelines pad prompts to (`max_sequence_length` default)
MAX_SEQUENCE_LENGTH = 1024
#: the pipelines' default spatio-temporal-guidance block list, for the real 48-layer transformer
STG_BLOCK, STG_DEPTH = 28, 48


class LTX2Adapter(LTX2Training, LTX2Folders, ModelAdapter):
    """LTX-2: LTX2VideoTransformer3DModel (joint audio-video), both VAEs, vocoder, Gemma 3 + connectors."""

    family = "ltx2"
    display_name = "LTX-2"
    default_fps = 24  # the pipelines' frame_rate default, which the model conditions on (and training uses)
    licence = "LTX-2 Community License (not Apache-2.0): read Lightricks' model card for its terms before commercial use"
    spatial_factor = 32
    temporal_factor = 8
    patch_size = 1
    default_lora_format = lora_format.FORMAT_NAME

    # ---- components --------------------------------------------------------------------------
    def model_components(self) -> tuple[str, ...]:
        return ALL_PARTS

    def swap_blocks(self, transformer: nn.Module) -> nn.ModuleList:
        """LTX-2's joint audio-video blocks: `transformer_blocks` (LTX2VideoTransformer3DModel)."""
        return transformer.transformer_blocks

    # ---- text ----------------------------------------------------------------------------------
    #: the connectors' outputs, named after the transformer arguments they feed (one mask serves
    #: both streams: the pipelines pass the connectors' mask as both attention masks)
    text_items = ("encoder_hidden_states", "audio_encoder_hidden_states", "encoder_attention_mask")
    text_components: ClassVar[tuple[str, ...]] = ("text_encoder", "tokenizer", "connectors")

    def _text_pipeline(self) -> Any:
        from diffusers import LTX2Pipeline

        parts = {name: None for name in ALL_PARTS}
        parts.update(text_encoder=self.text_encoder, tokenizer=self.tokenizer)
        return LTX2Pipeline(**parts)

    def encode_text(self, prompts: list[str], device: torch.device | str) -> Conditioning:
        """Exactly the pipelines' prompt path: `encode_prompt` (stripped prompts, Gemma's tokenizer
        padded on the LEFT to 1024 tokens, every hidden state stacked and flattened) and then the
        text connectors with the tokenizer's padding side, as `__call__` runs them."""
        connectors = self.component("connectors")
        if self.tokenizer is None or self.text_encoder is None or connectors is None:
            raise UfoError(f"{self.info.path}: encoding text needs {', '.join(self.text_components)} loaded")
        pipe = self._text_pipeline()
        embeds, mask, _, _ = pipe.encode_prompt(
            prompts, do_classifier_free_guidance=False, max_sequence_length=MAX_SEQUENCE_LENGTH, device=device
        )
        video, audio, text_mask = connectors(embeds, mask, padding_side=getattr(self.tokenizer, "padding_side", "left"))
        return {"encoder_hidden_states": video, "audio_encoder_hidden_states": audio, "encoder_attention_mask": text_mask}

    def random_text(self, batch: int, tokens: int, generator: torch.Generator, device: torch.device | str,
                    dtype: torch.dtype) -> Conditioning:
        """Connector-output shapes: the caption width for 2.0 (the transformer projects each stream),
        the transformer's own video / audio widths for 2.3 (no caption projection)."""
        cfg = self.transformer.config
        if cfg.use_prompt_embeddings:
            video_dim = audio_dim = int(cfg.caption_channels)
        else:
            video_dim = int(cfg.num_attention_heads * cfg.attention_head_dim)
            audio_dim = int(cfg.audio_num_attention_heads * cfg.audio_attention_head_dim)
        return {
            "encoder_hidden_states": torch.randn(batch, tokens, video_dim, generator=generator).to(device, dtype),
            "audio_encoder_hidden_states": torch.randn(batch, tokens, audio_dim, generator=generator).to(device, dtype),
            "encoder_attention_mask": torch.ones(batch, tokens, dtype=torch.long, device=device),
        }

    def build_training_timesteps(self) -> torch.Tensor:
        """The scheduler's own construction grid (`FlowMatchEulerDiscreteScheduler(**config)`, as
        EasyAnimate trains): unshifted for the base checkpoints, whose sampler shifts by the video's
        token count (`use_dynamic_shifting`, `mu` from 1024..4096 tokens, then `shift_terminal` 0.1),
        so no single static grid equals their sampling sigmas at every size — the unshifted grid
        covers every level evenly (`train.weighting_scheme = "shift"` with `timestep_shift` pushes
        it towards high noise for a chosen size); the distilled checkpoints' scheduler has no
        shift either."""
        return timestep_grid.flow_match_grid(timestep_grid.scheduler_config(self))

    # ---- LoRA ----------------------------------------------------------------------------------
    @classmethod
    def lora_target_presets(cls) -> dict[str, list[str]]:
        """Block linears. `attention` / `video`: the video stream only (self-attention, text
        cross-attention, and its feed-forward for `video`) — what a video-consistency LoRA changes;
        `all-linear` adds the audio stream and the audio<->video cross-attentions. The 2.3 gate
        projections (`to_gate_logits`) are left out of every preset."""
        proj = ("to_q", "to_k", "to_v", "to_out.0")
        video_attn = [f"{a}.{p}" for a in ("attn1", "attn2") for p in proj]
        audio = [f"{a}.{p}" for a in ("audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn") for p in proj]
        ff = ["ff.net.0.proj", "ff.net.2"]
        return {"attention": video_attn, "video": video_attn + ff,
                "all-linear": video_attn + ff + audio + ["audio_ff.net.0.proj", "audio_ff.net.2"]}  # fmt: skip

    @classmethod
    def to_original_module_name(cls, name: str) -> str:
        return lora_format.to_original_module_name(name)

    @classmethod
    def from_original_module_name(cls, name: str) -> str:
        return lora_format.from_original_module_name(name)

    @classmethod
    def lora_formats(cls) -> tuple[str, ...]:
        """ltx2-comfy (ComfyUI and diffusers both load it, the default), comfy (read: ComfyUI files
        with `.alpha` keys), peft."""
        return (lora_format.FORMAT_NAME, "comfy", "peft")

    @classmethod
    def lora_file_formats(cls) -> dict[str, Any]:
        return {lora_format.FORMAT_NAME: lora_format.LTX2_COMFY}

    @classmethod
    def names_model_path(cls) -> Path:
        """LTX-2.3's configs: its 48 blocks hold every module name of both versions (2.3 adds the gates)."""
        return Path(__file__).resolve().parent.parent.parent / "assets" / "ltx2-configs" / "ltx-2.3-22b-dev"

    # ---- tiny models -----------------------------------------------------------------------------
    @classmethod
    def tiny_choices(cls) -> dict[str, tuple[str, ...]]:
        """Variants: the pipeline class (`t2v`, `i2v`), each also as LTX-2.3 (`t2v-2.3`, `i2v-2.3`)."""
        from ufo_video.models.ltx2.tiny import TINY_VARIANTS

        return {"layout": ("diffusers",), "variant": TINY_VARIANTS}

    @classmethod
    def make_tiny(cls, path: Path, *, layout: str, variant: str, seed: int = 0, sizes: dict[str, Any] | None = None) -> Path:
        from ufo_video.models.ltx2.tiny import make_tiny_ltx2, split_variant

        if sizes:
            raise UfoError("tiny LTX-2 models come in one size (models/ltx2/tiny.py); `sizes` is not supported")
        pipeline_variant, version = split_variant(variant)
        return make_tiny_ltx2(path, variant=pipeline_variant, seed=seed, version=version)  # type: ignore[arg-type]

    # ---- pipelines -------------------------------------------------------------------------------
    def pipeline(self, task: str = "t2v") -> Any:
        """`LTX2Pipeline` (t2v) or `LTX2ImageToVideoPipeline` (i2v) over the loaded components."""
        from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline

        missing = [p for p in ALL_PARTS if self.component(p) is None]
        if missing:
            raise UfoError(f"{self.info.path}: the LTX-2 pipelines need every component; not loaded: {', '.join(missing)}")
        parts = {p: self.component(p) for p in ALL_PARTS}
        return LTX2ImageToVideoPipeline(**parts) if task == "i2v" else LTX2Pipeline(**parts)

    def pipeline_inputs(self, task: str, start: Any, end: Any, frames: int, size: tuple[int, int]) -> dict[str, Any]:
        if task == "i2v":
            return {"image": start}
        return {}

    def pipeline_negative_prompt(self, negative_prompt: str | None) -> str:
        """The pipelines encode "" for no negative prompt (`negative_prompt or ""`)."""
        return negative_prompt or ""

    def scheduler_with_shift(self, scheduler: Any, shift: float) -> Any:
        """A distilled checkpoint samples with its 8 fixed sigmas (`pipeline_defaults`), which a static
        shift would move off the schedule it was distilled for: refused. Base checkpoints shift by the
        video size (`use_dynamic_shifting`) and are refused by the generic hook."""
        if self.info.extra["distilled"]:
            from ufo_video.errors import UfoError

            raise UfoError(f"--flow-shift {shift:g} (infer.flow_shift): {self.info.path} is a distilled LTX-2 checkpoint "
                           "that samples with its fixed sigmas; a shift would move them. Leave --flow-shift unset")
        return super().scheduler_with_shift(scheduler, shift)

    def step_cache_blocks(self) -> Any:
        """Refused: diffusers 0.42.1's First Block Cache returns a skipped block's `encoder_hidden_states`
        INPUT as its second output, while an LTX-2 block's second output is the audio stream (its
        `encoder_hidden_states` is the text): a skipped step would put text embeddings where the audio
        goes (tests/test_ltx2.py checks this still holds)."""
        from ufo_video.errors import UfoError

        raise UfoError("the first-block step cache (--cache first-block / infer.cache) does not work on LTX-2 "
                       "(its blocks carry video and audio streams, which diffusers' cache hooks cannot skip "
                       "together); run without it")

    def stg_blocks(self) -> list[int]:
        """The pipelines' spatio-temporal-guidance block list ([28] of 48 layers) at the same relative
        depth of this transformer ([1] for the tiny 2-layer one; [28] would index past its end)."""
        depth = int(self.info.extra["num_layers"])
        return [min(depth - 1, round(STG_BLOCK * depth / STG_DEPTH))]

    def pipeline_defaults(self, task: str, *, steps: int, guidance_scale: float, fps: float) -> dict[str, Any]:
        """What the pipelines do not pick for this model themselves:
        - `frame_rate` = the video's fps (LTX-2 conditions its positions and the audio length on it;
          the pipelines' 24.0 would describe a different video than the one written);
        - `spatio_temporal_guidance_blocks` valid for this transformer's depth (`stg_blocks`);
        - distilled checkpoints: Lightricks' 8 fixed sigmas (`DISTILLED_SIGMA_VALUES`; the scheduler
          of a distilled folder does not shift them), with the extra guidance passes (STG, modality
          isolation) off and the audio guidance equal to the video's. Any other step count is refused
          rather than run on a schedule the checkpoint was not distilled for.
        Everything else keeps the pipelines' own defaults (modality scale 3, rescale 0.7, audio
        guidance 7 for base checkpoints)."""
        out: dict[str, Any] = {"frame_rate": float(fps), "spatio_temporal_guidance_blocks": self.stg_blocks()}
        if self.info.extra["distilled"]:
            from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES

            if steps != len(DISTILLED_SIGMA_VALUES):
                raise UfoError(
                    f"{self.info.path} is a distilled LTX-2 checkpoint: it samples with its {len(DISTILLED_SIGMA_VALUES)} "
                    f"fixed sigmas; use --steps {len(DISTILLED_SIGMA_VALUES)} (and --guidance-scale 1), not {steps}"
                )
            out.update(sigmas=list(DISTILLED_SIGMA_VALUES), stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0,
                       audio_modality_scale=1.0, audio_guidance_scale=float(guidance_scale))  # fmt: skip
        return out
