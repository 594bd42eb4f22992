"""Tiny random Wan 2.1 / 2.2 model folders, written by diffusers' own pipelines.

Every Wan code path (strict loading, both transformer namings, the two 2.2 experts, TI2V's
48-channel VAE, I2V 2.1's CLIP image stream, LoRA keys) runs on these in seconds on a CPU, with
no download: the UMT5-style tokenizer is a Unigram vocabulary built in memory.

The folder is assembled into diffusers' `WanPipeline` / `WanImageToVideoPipeline` and written by
its `save_pretrained`, so it is file for file what diffusers writes for the `...-Diffusers`
repositories (model_index.json with `boundary_ratio` / `expand_timesteps`, one subfolder per
component). One local difference: without torchvision, transformers records the image processor
as `CLIPImageProcessorPil` (the hub folders say `CLIPImageProcessor`); both load.

Single-file convention (`layout="single-file"`, what ComfyUI users hold): the transformer's
weights are ONE safetensors file with Wan's original key names, stored as
`<expert>/wan-original.safetensors` next to diffusers' `<expert>/config.json` (a single file has
no config of its own), where `<expert>` is `transformer` and, for 2.2 A14B, `transformer_2`.
There is no `diffusion_pytorch_model*.safetensors` in that subfolder, so diffusers' own loader
cannot half-load it by mistake; `SINGLE_FILE_NAME` names the file and
`wan_layout.key_naming` tells the two namings apart from the keys. (diffusers' own
`WanTransformer3DModel.from_single_file(file, config=folder, subfolder="transformer")` also
loads it, which the layout tests use as an independent check of the names.)
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Literal

import torch

from ufo_video.errors import UfoError
from ufo_video.models.wan.layout import diffusers_to_original_state_dict

Variant = Literal["t2v", "i2v", "ti2v", "a14b", "a14b-i2v"]
VARIANTS: tuple[str, ...] = ("t2v", "i2v", "ti2v", "a14b", "a14b-i2v")
SINGLE_FILE_NAME = "wan-original.safetensors"
# ComfyUI's checkpoints put this in front of the original names; the tiny single file does too so
# that loaders must strip it (wan/layout.py strips it, and an unprefixed file works the same).
SINGLE_FILE_PREFIX = "model.diffusion_model."

# Facts of the converted repositories (diffusers' scripts/convert_wan_to_diffusers.py).
BOUNDARY_RATIO = {"a14b": 0.875, "a14b-i2v": 0.9}
FLOW_SHIFT = {"ti2v": 5.0}  # every other variant: 3.0

TEXT_DIM = 32  # tiny UMT5 d_model (real: 4096)
IMAGE_DIM = 16  # tiny CLIP vision hidden size (real: 1280)
CLIP_IMAGE_SIZE = 32  # tiny CLIP input side (real: 224)
WAN_CONFIGS = Path(__file__).resolve().parents[2] / "assets" / "wan-configs"


def tiny_transformer_config(variant: str, **overrides: Any) -> dict[str, Any]:
    """A 2-layer, width-24 `WanTransformer3DModel` config with the variant's channel layout.

    Channels follow the real models: T2V 16 in/out; I2V 36 in (16 noisy + 4 mask + 16 image
    latents), 16 out; TI2V-5B 48 in/out. Only I2V 2.1 has the CLIP image stream (`image_dim`,
    `added_kv_proj_dim` = the model width as in the 14B); 2.2 I2V-A14B has none."""
    _check_variant(variant)
    cfg: dict[str, Any] = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels={"i2v": 36, "a14b-i2v": 36, "ti2v": 48}.get(variant, 16),
        out_channels=48 if variant == "ti2v" else 16,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=48,
        num_layers=2,
    )
    if variant == "i2v":
        cfg.update(image_dim=IMAGE_DIM, added_kv_proj_dim=24)
    cfg.update(overrides)
    return cfg


def tiny_vae_config(variant: str) -> dict[str, Any]:
    """A tiny `AutoencoderKLWan`: z=16, 8x spatial, 4x causal time for 2.1 / A14B; for TI2V the 2.2
    VAE's structure (z=48, residual, patchified RGB = 12 channels, 16x spatial) with the real
    per-channel latent statistics, read from the shipped wan2.2-ti2v-5b config."""
    _check_variant(variant)
    cfg: dict[str, Any] = dict(base_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])
    if variant == "ti2v":
        real = json.loads((WAN_CONFIGS / "wan2.2-ti2v-5b" / "vae" / "config.json").read_text())
        keep = ("z_dim", "is_residual", "in_channels", "out_channels", "patch_size", "scale_factor_temporal",
                "scale_factor_spatial", "latents_mean", "latents_std")  # fmt: skip
        cfg.update({k: real[k] for k in keep}, decoder_base_dim=8)
    return cfg


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise UfoError(f"unknown Wan variant {variant!r}; expected one of {', '.join(VARIANTS)}")


# Whole words get better (higher) Unigram scores than their letters, so common prompt words are
# one token and any other ASCII text still splits into known pieces instead of <unk>.
_WORDS = ("a", "an", "the", "of", "in", "on", "and", "with", "is", "cat", "dog", "car", "tree", "sky",
          "red", "blue", "green", "small", "big", "static", "video", "moving", "scene", "person", "walks",
          "runs", "sits", "water", "fire", "light", "bad", "quality", "blurry")  # fmt: skip
_CHARS = string.ascii_letters + string.digits + string.punctuation


def tiny_tokenizer_vocab() -> list[tuple[str, float]]:
    """The (piece, score) list of the tiny UMT5-style Unigram tokenizer.

    T5's fixed ids come first (<pad>=0, </s>=1, <unk>=2, as UMT5's pad_token_id / eos_token_id
    expect), then the SentencePiece word-start marker, whole words, then single characters."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -3.0) for w in _WORDS]
    vocab += [("▁" + c, -8.0) for c in _CHARS]
    vocab += [(c, -6.0) for c in _CHARS]
    return vocab


def write_tokenizer(folder: Path) -> Any:
    """Build the offline tokenizer in memory and save it (`tokenizer.json` + config); returns it.

    transformers 5's `T5Tokenizer(vocab=[(piece, score), ...])` builds the Unigram model directly
    (no sentencepiece file, no download); `AutoTokenizer.from_pretrained(folder)` reloads it."""
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer(vocab=tiny_tokenizer_vocab(), extra_ids=0)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def tiny_text_encoder(vocab_size: int) -> torch.nn.Module:
    """A 2-layer UMT5 encoder (gated-GELU, per-layer relative position bias, as UMT5-XXL)."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=16, d_ff=64, num_heads=2, num_layers=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False,
    )  # fmt: skip
    return UMT5EncoderModel(config)


def tiny_image_encoder() -> tuple[torch.nn.Module, Any]:
    """A 2-layer CLIP vision tower and its image processor (I2V 2.1 only). The pipeline feeds the
    penultimate hidden state, width `IMAGE_DIM`, to the transformer's image embedding."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=IMAGE_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=CLIP_IMAGE_SIZE, patch_size=8, projection_dim=IMAGE_DIM,
    )  # fmt: skip
    processor = CLIPImageProcessor(
        size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE},
        do_center_crop=True, do_normalize=True, do_rescale=True, do_resize=True, resample=3,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )  # fmt: skip
    return CLIPVisionModel(config), processor


def expert_folders(variant: str) -> tuple[str, ...]:
    """The transformer subfolders of a variant: two experts for 2.2 A14B, else one."""
    _check_variant(variant)
    return ("transformer", "transformer_2") if variant in BOUNDARY_RATIO else ("transformer",)


def make_tiny_wan(
    path: str | Path,
    variant: Variant = "t2v",
    seed: int = 0,
    layout: Literal["diffusers", "single-file"] = "diffusers",
) -> Path:
    """Write a tiny random Wan model folder with diffusers' own pipeline `save_pretrained`.

    variant: "t2v" (2.1 T2V), "i2v" (2.1 I2V with CLIP), "ti2v" (2.2 TI2V-5B: z=48 VAE,
    expand_timesteps), "a14b" (2.2 T2V two experts, boundary 0.875), "a14b-i2v" (2.2 I2V two
    experts, boundary 0.9). layout "single-file" replaces each expert's diffusers weights by
    `<expert>/wan-original.safetensors` with Wan's original, prefixed key names (see module
    docstring). The same seed gives the same tensors. Refuses a non-empty `path`."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel

    _check_variant(variant)
    if layout not in ("diffusers", "single-file"):
        raise UfoError(f"unknown Wan layout {layout!r}; expected 'diffusers' or 'single-file'")
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UfoError(f"{out} exists and is not an empty folder; choose a new folder")

    torch.manual_seed(seed)
    experts = [WanTransformer3DModel(**tiny_transformer_config(variant)) for _ in expert_folders(variant)]
    vae = AutoencoderKLWan(**tiny_vae_config(variant))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(out / "tokenizer")
    text_encoder = tiny_text_encoder(len(tokenizer))
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=FLOW_SHIFT.get(variant, 3.0)
    )
    parts: dict[str, Any] = dict(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
        transformer=experts[0], transformer_2=experts[1] if len(experts) > 1 else None,
        boundary_ratio=BOUNDARY_RATIO.get(variant), expand_timesteps=variant == "ti2v",
    )  # fmt: skip
    if variant in ("i2v", "a14b-i2v"):
        image_encoder, processor = tiny_image_encoder() if variant == "i2v" else (None, None)
        pipe = WanImageToVideoPipeline(image_encoder=image_encoder, image_processor=processor, **parts)
    else:
        pipe = WanPipeline(**parts)
    pipe.save_pretrained(str(out), safe_serialization=True)
    if layout == "single-file":
        for folder, expert in zip(expert_folders(variant), experts):
            write_single_file(expert, out / folder)
    return out


def write_single_file(transformer: torch.nn.Module, folder: Path, prefix: str = SINGLE_FILE_PREFIX) -> Path:
    """Replace `folder`'s diffusers weights by one `wan-original.safetensors` with Wan's names.

    `config.json` stays: the original file has no config, and the adapter needs one to build the
    model before renaming the tensors into it."""
    from safetensors.torch import save_file

    state = diffusers_to_original_state_dict(transformer.state_dict(), prefix=prefix)
    target = folder / SINGLE_FILE_NAME
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(target), metadata={"format": "pt"})
    for old in folder.glob("diffusion_pytorch_model*.safetensors*"):
        old.unlink()
    return target
