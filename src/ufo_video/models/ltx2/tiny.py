"""Tiny random LTX-2 pipeline folders, written by diffusers' own `save_pretrained`.

Every LTX-2 code path (Gemma 3 text encoding with stacked hidden states, the text connectors,
the joint audio-video transformer, both VAEs, the vocoder, LoRA loading) runs on these in seconds
on a CPU with no download. The folder is assembled into `LTX2Pipeline` (or
`LTX2ImageToVideoPipeline` for `variant="i2v"`; LTX-2 has ONE checkpoint for both tasks, so the
two folders hold the same tensors and differ only in the pipeline class in model_index.json) and
saved by it, so it is laid out file for file as diffusers' `Lightricks/LTX-2` folders.

Kept real on purpose, so size rules and packing are the real ones: the video VAE compresses 32x
in space (patch 4 x three 2x stages) and 8x in time (frames 8k+1); the audio VAE's 4x mel / 4x time
compression (a constant in diffusers); the audio token width = latent channels x latent mel bins,
as in the real model (8 x 16 = 128); the connectors' learnable registers (the padded prompt length
must be a multiple of their count); the tokenizer pads on the left to 1024 tokens; the scheduler is
the base checkpoint's (dynamic shift, terminal shift 0.1). `version="2.3"` turns on LTX-2.3's
transformer and connector features (gated attention, cross-attention modulation, per-modality text
projections, perturbed attention) with the 2.0 vocoder (the 2.3 bandwidth-extension vocoder only
changes audio decoding).

The tokenizer is a byte-fallback BPE over single characters built in memory with the `tokenizers`
library (through transformers' `GemmaTokenizer`, which wraps exactly that), with Gemma's special
ids (<pad>=0, <eos>=1, <bos>=2, <unk>=3, <mask>=4) and the image tokens Gemma 3's config names.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

import torch

from ufo_video.errors import UfoError

VARIANTS: tuple[str, ...] = ("t2v", "i2v")
VERSIONS: tuple[str, ...] = ("2.0", "2.3")
#: `model make-tiny --variant` choices: the pipeline class, and `-2.3` for an LTX-2.3 model
#: (`version="2.3"`); the plain names are LTX-2.0
TINY_VARIANTS: tuple[str, ...] = (*VARIANTS, *(f"{v}-2.3" for v in VARIANTS))


def split_variant(name: str) -> tuple[str, str]:
    """A `make-tiny` variant name -> (pipeline variant, version): "i2v-2.3" -> ("i2v", "2.3")."""
    if name not in TINY_VARIANTS:
        raise UfoError(f"unknown tiny LTX-2 variant {name!r}; expected one of {', '.join(TINY_VARIANTS)}")
    variant, _, version = name.partition("-")
    return variant, version or "2.0"

TEXT_DIM = 32  # tiny Gemma hidden size (real Gemma-3-12B: 3840)
TEXT_LAYERS = 2  # tiny Gemma layers (real: 48); connectors take TEXT_LAYERS + 1 stacked states
LATENT_CHANNELS = 8  # tiny video latent channels (real: 128)
AUDIO_LATENT_CHANNELS = 2  # tiny audio latent channels (real: 8)
MEL_BINS = 8  # tiny mel bins (real: 64); latent mel bins = MEL_BINS // 4
REGISTERS = 8  # tiny connector registers (real: 128); 1024 is a multiple of both
MAX_SEQUENCE_LENGTH = 1024  # what the pipelines pad prompts to by default (and the tokenizer's max)

# Base checkpoint scheduler, as diffusers' convert_ltx2_to_diffusers.py writes it (distilled: no
# dynamic shifting, no terminal shift).
SCHEDULER_BASE = dict(
    use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096,
    shift_terminal=0.1,
)  # fmt: skip


def _check(variant: str, version: str) -> None:
    if variant not in VARIANTS:
        raise UfoError(f"unknown LTX-2 variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if version not in VERSIONS:
        raise UfoError(f"unknown LTX-2 version {version!r}; expected one of {', '.join(VERSIONS)}")


def tiny_transformer_config(version: str = "2.0") -> dict[str, Any]:
    """A 2-layer `LTX2VideoTransformer3DModel`: video width 16 (2 heads x 8), audio width 8 (2 x 4),
    inputs as the tiny VAEs pack them; 2.3's feature flags as diffusers' conversion script sets them."""
    is_23 = version == "2.3"
    return dict(
        in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, patch_size=1, patch_size_t=1,
        num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=AUDIO_LATENT_CHANNELS * (MEL_BINS // 4), audio_out_channels=AUDIO_LATENT_CHANNELS * (MEL_BINS // 4),
        audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
        num_layers=2, caption_channels=TEXT_DIM, rope_type="split", rope_double_precision=True,
        gated_attn=is_23, cross_attn_mod=is_23, audio_gated_attn=is_23, audio_cross_attn_mod=is_23,
        use_prompt_embeddings=not is_23, perturbed_attn=is_23,
    )  # fmt: skip


def tiny_connectors_config(version: str = "2.0") -> dict[str, Any]:
    """`LTX2TextConnectors` over the tiny Gemma's stacked states. 2.0: one shared projection to the
    caption width, the transformer projects per stream; 2.3: per-modality projections straight to the
    transformer's video / audio widths (the transformer then has no caption projection)."""
    cfg: dict[str, Any] = dict(
        caption_channels=TEXT_DIM, text_proj_in_factor=TEXT_LAYERS + 1,
        video_connector_num_attention_heads=4, video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=REGISTERS,
        audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=REGISTERS,
        connector_rope_base_seq_len=MAX_SEQUENCE_LENGTH, rope_type="split", rope_double_precision=True,
    )  # fmt: skip
    if version == "2.3":
        # 2.3: the connectors' outputs feed the transformer's attention directly, so their widths are
        # the transformer's (video 2 x 8 = 16, audio 2 x 4 = 8)
        cfg.update(
            video_connector_num_attention_heads=2, video_connector_attention_head_dim=8,
            audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=4,
            video_gated_attn=True, audio_gated_attn=True, per_modality_projections=True,
            video_hidden_dim=16, audio_hidden_dim=8, proj_bias=True,
        )  # fmt: skip
    return cfg


def tiny_vae_config() -> dict[str, Any]:
    """`AutoencoderKLLTX2Video` with the real 2.0 block structure (patch 4; down: spatial, temporal,
    2x spatiotemporal; up: 3x spatiotemporal) at widths 8-32, one layer per block: 32x / 8x."""
    return dict(
        latent_channels=LATENT_CHANNELS, block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, True), decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False, False, False, False),
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        upsample_type=("spatiotemporal", "spatiotemporal", "spatiotemporal"),
        upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=False,
        patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    )  # fmt: skip


def tiny_audio_vae_config() -> dict[str, Any]:
    """`AutoencoderKLLTX2Audio`: stereo mel input, 4x mel / 4x time compression (fixed in diffusers)."""
    return dict(
        base_channels=4, output_channels=2, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=None, in_channels=2,
        resolution=32, latent_channels=AUDIO_LATENT_CHANNELS, norm_type="pixel", causality_axis="height",
        dropout=0.0, mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True,
        mel_bins=MEL_BINS, double_z=True,
    )  # fmt: skip


def tiny_vocoder_config() -> dict[str, Any]:
    """`LTX2Vocoder` (2.0's HiFi-GAN style) over the decoded stereo mel (2 x MEL_BINS channels)."""
    return dict(
        in_channels=2 * MEL_BINS, hidden_channels=16, out_channels=2, upsample_kernel_sizes=[4, 4],
        upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1, output_sampling_rate=16000,
    )  # fmt: skip


SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_image>", "<image_soft_token>", "<end_of_image>")


def tiny_tokenizer() -> Any:
    """Gemma's tokenizer class over an in-memory byte-fallback BPE: Gemma's special ids, the 256 byte
    tokens, the word-start marker and single printable characters (no merges: one token per
    character, every text encodes without <unk>). Left padding, max length 1024, as the pipeline uses."""
    from transformers import GemmaTokenizer

    vocab: dict[str, int] = {}
    for piece in (*SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), "▁", *string.printable.strip()):
        vocab.setdefault(piece, len(vocab))
    return GemmaTokenizer(
        vocab=vocab, merges=[], add_bos_token=True, add_eos_token=False, padding_side="left", model_max_length=MAX_SEQUENCE_LENGTH,
        extra_special_tokens={"boi_token": "<start_of_image>", "image_token": "<image_soft_token>", "eoi_token": "<end_of_image>"},
    )  # fmt: skip


def tiny_text_encoder(tokenizer: Any) -> torch.nn.Module:
    """`Gemma3ForConditionalGeneration` (the class the pipelines take, vision tower included) with a
    2-layer text model and a 1-layer SigLIP vision tower (the text path never runs it)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    text = dict(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=64, num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=2048,
        sliding_window=64, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )  # fmt: skip
    vision = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
    )  # fmt: skip
    config = Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), image_token_index=ids("<image_soft_token>"),
    )  # fmt: skip
    return Gemma3ForConditionalGeneration(config).eval()


def tiny_components(version: str = "2.0", seed: int = 0) -> dict[str, Any]:
    """The pipeline's components, each seeded from `seed` (the same seed, the same tensors)."""
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    _check("t2v", version)
    tokenizer = tiny_tokenizer()
    parts: dict[str, Any] = {"tokenizer": tokenizer}
    builders = (
        ("text_encoder", lambda: tiny_text_encoder(tokenizer)),
        ("connectors", lambda: LTX2TextConnectors(**tiny_connectors_config(version))),
        ("transformer", lambda: LTX2VideoTransformer3DModel(**tiny_transformer_config(version))),
        ("vae", lambda: AutoencoderKLLTX2Video(**tiny_vae_config())),
        ("audio_vae", lambda: AutoencoderKLLTX2Audio(**tiny_audio_vae_config())),
        ("vocoder", lambda: LTX2Vocoder(**tiny_vocoder_config())),
    )
    for offset, (name, build) in enumerate(builders):
        torch.manual_seed(seed + offset)
        parts[name] = build()
    parts["scheduler"] = FlowMatchEulerDiscreteScheduler(**SCHEDULER_BASE)
    return parts


def make_tiny_ltx2(
    path: str | Path, variant: Literal["t2v", "i2v"] = "t2v", seed: int = 0, version: Literal["2.0", "2.3"] = "2.0"
) -> Path:
    """Write a tiny random LTX-2 pipeline folder (a few MB) with the pipeline's `save_pretrained`;
    refuses a non-empty `path`. `variant` picks the pipeline class recorded in model_index.json."""
    from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline

    _check(variant, version)
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UfoError(f"{out} exists and is not an empty folder; choose a new folder")
    pipeline_class = LTX2ImageToVideoPipeline if variant == "i2v" else LTX2Pipeline
    pipe = pipeline_class(**tiny_components(version, seed))
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    return out
