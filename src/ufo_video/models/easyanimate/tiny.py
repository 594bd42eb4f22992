"""Tiny random EasyAnimate-V5.1-architecture models, written in either on-disk layout.

Every code path that loads the 12B model (strict loading, both layouts, pipelines, LoRA keys)
runs on these in seconds on a CPU. The tokenizer is a real byte-level BPE built offline, so no
download is ever needed. Architecture constants follow the reference notes' tiny configs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKLMagvit, FlowMatchEulerDiscreteScheduler
from safetensors.torch import save_file

from ufo_video.errors import UfoError
from ufo_video.models.easyanimate.transformer import UfoEasyAnimateTransformer
from ufo_video.models.easyanimate.layout import diffusers_to_original

QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]  # fmt: skip

# The V5.1 scheduler config (identical in both layouts).
SCHEDULER_CONFIG: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}

# Keys the original EasyAnimate configs carry beyond diffusers' arguments (kept so tiny
# original-layout folders look like real ones).
ORIGINAL_TRANSFORMER_EXTRA = {
    "ref_channels": None,
    "clip_channels": None,
    "swa_layers": None,
    "enable_clip_in_inpaint": False,
    "add_ref_latent_in_control_model": True,
}
ORIGINAL_VAE_EXTRA = {
    "force_upcast": True, "mid_block_use_attention": False, "mid_block_attention_type": "spatial",
    "sample_size": 256, "norm_type": None, "slice_mag_vae": False, "slice_compression_vae": False,
    "cache_compression_vae": False, "cache_mag_vae": True, "use_tiling": False, "use_tiling_encoder": False,
    "use_tiling_decoder": False, "mini_batch_encoder": 4, "mini_batch_decoder": 1,
}  # fmt: skip


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character table used by byte-level BPE vocabularies."""
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = visible[:]
    extra = 0
    for b in range(256):
        if b not in visible:
            visible.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(visible, (chr(c) for c in chars)))


def write_tokenizer(folder: Path, merges: list[tuple[str, str]] | None = None) -> int:
    """Write an offline Qwen2-style byte-level BPE tokenizer; returns its vocabulary size.

    transformers 5 builds Qwen2Tokenizer from in-memory `vocab` and `merges` (the old
    `vocab_file=` / `merges_file=` arguments are silently ignored and give an empty tokenizer that
    encodes every prompt alike — a test guards against that)."""
    from transformers import Qwen2Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    merges = merges or [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("a", "n")]
    vocab = {s: i for i, s in enumerate(_bytes_to_unicode().values())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=list(merges), unk_token=None, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tok.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")]})
    tok.chat_template = QWEN2VL_CHAT_TEMPLATE
    tok.save_pretrained(str(folder))
    if len(tok) != len(vocab):
        raise RuntimeError(f"tiny tokenizer has {len(tok)} tokens, expected {len(vocab)}")
    return len(vocab)


def _mrope_sections(head_dim: int) -> list[int]:
    """Qwen2-VL splits each head's rotary half-dimension (head_dim / 2) into temporal, height and
    width sections; they must add up to it (Qwen2-VL-7B: [16, 24, 24] for head_dim 128)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_text_encoder(vocab_size: int, hidden: int = 16, layers: int = 2) -> torch.nn.Module:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    def tid(i: int) -> int:
        return vocab_size - len(SPECIAL_TOKENS) + i

    config = Qwen2VLConfig(
        text_config=dict(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=vocab_size,
            rope_parameters={"rope_type": "default", "mrope_section": _mrope_sections(hidden // 2), "rope_theta": 10000.0},
            bos_token_id=None,
            eos_token_id=tid(2),
            pad_token_id=tid(0),
        ),
        vision_config=dict(depth=2, embed_dim=16, num_heads=2, hidden_size=hidden, in_chans=3),
        vision_start_token_id=tid(3),
        vision_end_token_id=tid(4),
        image_token_id=tid(5),
        video_token_id=tid(6),
    )
    config.bos_token_id = None
    config.eos_token_id = tid(2)
    return Qwen2VLForConditionalGeneration(config)


def tiny_transformer_config(variant: str, latent: int = 4, text_dim: int = 16, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=2 * latent + 1 if variant == "inp" else latent,
        out_channels=latent,
        patch_size=2,
        num_layers=2,
        mmdit_layers=2,
        time_embed_dim=8,
        text_embed_dim=text_dim,
        add_norm_text_encoder=True,
        resize_inpaint_mask_directly=True,
        enable_text_attention_mask=True,
        add_noise_in_inpaint_model=True,
    )
    cfg.update(overrides)
    return cfg


def tiny_vae_config(latent: int = 4, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = dict(
        block_out_channels=[8, 8, 8, 8],
        latent_channels=latent,
        layers_per_block=1,
        norm_num_groups=2,
        spatial_group_norm=False,
    )
    cfg.update(overrides)
    return cfg


def _write_component(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))


def write_model_folder(
    out: Path,
    *,
    transformer: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoder: torch.nn.Module,
    tokenizer_dir: Path | None = None,
    layout: Literal["diffusers", "original"] = "diffusers",
    vocab_merges: list[tuple[str, str]] | None = None,
) -> Path:
    """Write a complete model folder in the requested layout from in-memory components."""
    out.mkdir(parents=True, exist_ok=True)
    pipeline_class = "EasyAnimateInpaintPipeline" if transformer.config.in_channels != vae.config.latent_channels else "EasyAnimatePipeline"
    index = {
        "_class_name": pipeline_class,
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen2VLForConditionalGeneration"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"],
        "transformer": ["diffusers", "EasyAnimateTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLMagvit"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2))

    tcfg = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    tcfg["_class_name"] = "EasyAnimateTransformer3DModel"
    tstate = transformer.state_dict()
    vcfg = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    vcfg["_class_name"] = "AutoencoderKLMagvit"
    if layout == "original":
        tcfg.update(ORIGINAL_TRANSFORMER_EXTRA)
        tcfg["_diffusers_version"] = "0.31.0"
        tstate = {diffusers_to_original(k): v for k, v in tstate.items()}
        vcfg.update(ORIGINAL_VAE_EXTRA)
    else:
        vcfg["cache_mag_vae"] = True
    _write_component(out / "transformer", tcfg, tstate)
    _write_component(out / "vae", vcfg, vae.state_dict())

    text_encoder.save_pretrained(str(out / "text_encoder"), safe_serialization=True)
    if tokenizer_dir is None:
        write_tokenizer(out / "tokenizer", vocab_merges)
    else:
        import shutil

        shutil.copytree(tokenizer_dir, out / "tokenizer", dirs_exist_ok=True)
    (out / "scheduler").mkdir(exist_ok=True)
    sched = FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)
    sched.save_pretrained(str(out / "scheduler"))
    return out


def make_tiny(
    out: Path,
    *,
    layout: Literal["diffusers", "original"] = "diffusers",
    variant: Literal["inp", "t2v"] = "inp",
    seed: int = 0,
    sizes: dict[str, Any] | None = None,
) -> Path:
    """`ufo-video model make-tiny`: a random tiny EasyAnimate V5.1 model folder, ready to load.

    `sizes` (the bench's presets) widens it: heads, head_dim, layers, time_embed_dim, latent,
    vae_block_out, vae_groups, text_hidden, text_layers."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UfoError(f"{out} exists and is not empty; choose a new folder")
    torch.manual_seed(seed)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_tokenizer(Path(tmp) / "tokenizer")
        if sizes is None:
            text_encoder = tiny_text_encoder(vocab_size)
            transformer = UfoEasyAnimateTransformer(**tiny_transformer_config(variant, text_dim=16))
            vae = AutoencoderKLMagvit(**tiny_vae_config())
        else:
            z = dict(sizes)
            text_encoder = tiny_text_encoder(vocab_size, hidden=z["text_hidden"], layers=z["text_layers"])
            transformer = UfoEasyAnimateTransformer(**tiny_transformer_config(
                variant, latent=z["latent"], text_dim=z["text_hidden"], num_attention_heads=z["heads"],
                attention_head_dim=z["head_dim"], num_layers=z["layers"], mmdit_layers=z["layers"],
                time_embed_dim=z["time_embed_dim"],
            ))  # fmt: skip
            vae = AutoencoderKLMagvit(**tiny_vae_config(
                latent=z["latent"], block_out_channels=list(z["vae_block_out"]), norm_num_groups=z["vae_groups"],
            ))  # fmt: skip
        return write_model_folder(
            out, transformer=transformer, vae=vae, text_encoder=text_encoder,
            tokenizer_dir=Path(tmp) / "tokenizer", layout=layout,
        )  # fmt: skip
