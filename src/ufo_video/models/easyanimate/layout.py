"""EasyAnimate V5.1 on-disk layouts and configs: detection, the original → diffusers translation, the VAE's compression and its config quirk.

Two layouts exist for the same weights:

* the diffusers layout (`model_index.json` + `transformer/ vae/ text_encoder/ tokenizer/
  scheduler/`), loaded by diffusers' classes as is;
* the original EasyAnimate layout the UFO guide tells users to download
  (`models/Diffusion_Transformer/EasyAnimateV5.1-12b-zh-InP`): the same subfolders and a
  `model_index.json` too, but a transformer whose text stream is a separate `attn2` module
  (six renames per block, verified against EasyAnimate's own classes) and config files with
  EasyAnimate's extra keys (ignored: they do not change any tensor). VAE, text encoder,
  tokenizer and scheduler tensors are named identically in both layouts.

The key renames are an explicit table applied per module path segment — never guessed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ufo_video.errors import ModelLoadError
from ufo_video.models.configs import init_kwargs as diffusers_init_kwargs  # noqa: F401  (re-exported)
from ufo_video.models.configs import read_json  # noqa: F401  (re-exported)


# Text-stream projections: original `attn2.*` -> diffusers `attn1.*` (same tensors, new names).
ORIGINAL_TO_DIFFUSERS_ATTN: dict[str, str] = {
    "attn2.to_q": "attn1.add_q_proj",
    "attn2.to_k": "attn1.add_k_proj",
    "attn2.to_v": "attn1.add_v_proj",
    "attn2.to_out.0": "attn1.to_add_out",
    "attn2.norm_q": "attn1.norm_added_q",
    "attn2.norm_k": "attn1.norm_added_k",
}
DIFFUSERS_TO_ORIGINAL_ATTN = {v: k for k, v in ORIGINAL_TO_DIFFUSERS_ATTN.items()}

_BLOCK_RE = re.compile(r"^(transformer_blocks\.\d+\.)(.*)$")


def _translate(name: str, table: dict[str, str]) -> str:
    match = _BLOCK_RE.match(name)
    if not match:
        return name
    prefix, rest = match.groups()
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return prefix + new + rest[len(old):]
    return name


def original_to_diffusers(name: str) -> str:
    """Translate an original-layout transformer tensor or module path to the diffusers name."""
    return _translate(name, ORIGINAL_TO_DIFFUSERS_ATTN)


def diffusers_to_original(name: str) -> str:
    """Translate a diffusers transformer tensor or module path to the original-layout name."""
    return _translate(name, DIFFUSERS_TO_ORIGINAL_ATTN)


def detect_layout(path: Path) -> str:
    """'original' when the transformer's weights name the text stream `attn2`, else 'diffusers'.

    Both layouts ship `model_index.json` and the same subfolders, and the original config only
    adds ignorable keys, so the tensor names (read from safetensors headers, no data) decide.
    """
    if not path.exists():
        raise ModelLoadError(
            f"model folder not found: {path}. Download EasyAnimateV5.1-12b-zh-InP into "
            "models/Diffusion_Transformer/ (the guide's place), or make a tiny test model with "
            "`ufo-video model make-tiny DIR`."
        )
    if not path.is_dir():
        raise ModelLoadError(f"{path} is a file; a model is a folder with transformer/, vae/, text_encoder/ ...")
    if not (path / "transformer" / "config.json").is_file():
        raise ModelLoadError(
            f"{path} is not an EasyAnimate model folder: {path / 'transformer' / 'config.json'} is missing; "
            "point to the folder that contains transformer/, vae/, text_encoder/, tokenizer/ and scheduler/"
        )
    from ufo_video.models.weights import find_weight_files, read_header_shapes

    names = read_header_shapes(find_weight_files(path / "transformer"))
    return "original" if any(".attn2." in k for k in names) else "diffusers"


def with_vae_quirk(vae: Any) -> Any:
    """diffusers 0.42.1: the inpaint pipeline reads `vae.config.cache_mag_vae`, which
    AutoencoderKLMagvit never registers, so image-to-video fails with
    "'FrozenDict' object has no attribute 'cache_mag_vae'". V5.1's magvit VAE is causal in time
    (the first frame is encoded alone), which is what `cache_mag_vae=True` selects in `resize_mask`.
    """
    if "cache_mag_vae" not in vae.config:
        vae.register_to_config(cache_mag_vae=True)
    return vae


def vae_compression(vae_config: dict[str, Any]) -> dict[str, int]:
    """Spatial/temporal compression of a magvit VAE from its config, by diffusers' own rule
    (`AutoencoderKLMagvit.spatial_compression_ratio` = 2^(blocks-1), temporal = 2^(blocks-2)),
    which the pipelines use to size latents: V5.1's 4 blocks give 8x/4x, the tiny base's 3 give 4x/2x."""
    blocks = len(vae_config.get("block_out_channels") or [128, 256, 512, 512])
    if blocks < 2:
        raise ModelLoadError(f"VAE config: block_out_channels needs at least 2 blocks, got {blocks}")
    return {"spatial_factor": 2 ** (blocks - 1), "temporal_factor": 2 ** (blocks - 2)}
