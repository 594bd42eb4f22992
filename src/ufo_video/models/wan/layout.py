"""Wan 2.1 / 2.2 transformer names: Wan's original layout <-> diffusers' `WanTransformer3DModel`.

Two names exist for every transformer tensor:

* the original names of Wan's own repository (`self_attn.q`, `cross_attn.k_img`, `ffn.0`,
  `head.head`, ...), which ComfyUI single-file checkpoints and ComfyUI / diffusion-pipe LoRAs use,
  often behind a `model.diffusion_model.` or `diffusion_model.` prefix;
* diffusers' names (`attn1.to_q`, `attn2.add_k_proj`, `ffn.net.0.proj`, `proj_out`, ...), used by
  the `...-Diffusers` repositories and by PEFT adapters on `WanTransformer3DModel`.

The translation is an explicit table of whole module paths (one entry per parameterised module of
every variant: T2V 2.1, I2V 2.1 with its image stream, FLF2V's image position embedding, 2.2 A14B
and TI2V-5B), taken from diffusers' converter (`scripts/convert_wan_to_diffusers.py`) and checked
by the tests against hand-written pairs, strict loading and diffusers' own `from_single_file`. It
is never a substring replace: a key outside the table is an error naming the key, so a VACE /
Animate checkpoint or a typo cannot slip through half-renamed. kohya / musubi LoRA names
(`lora_unet_blocks_0_self_attn_q`) are the original module paths with dots flattened; the same
table restores them.

Note the norm swap: the original block calls its norms norm1 (self-attn), norm3 (cross-attn,
affine) and norm2 (FFN); diffusers numbers them in call order, so the only norm with weights,
original `norm3`, is diffusers' `norm2`.
"""

from __future__ import annotations

import re

from ufo_video.errors import ModelLoadError

# Prefixes single-file checkpoints and LoRA files put in front of the original names; the
# longer one first so `model.diffusion_model.` is not left as `model.`.
ORIGINAL_PREFIXES: tuple[str, ...] = ("model.diffusion_model.", "diffusion_model.")

_W = ("weight",)
_WB = ("weight", "bias")

# Modules outside the blocks: diffusers path -> (original path, parameter leaves).
_TOP_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "patch_embedding": ("patch_embedding", _WB),
    "condition_embedder.time_embedder.linear_1": ("time_embedding.0", _WB),
    "condition_embedder.time_embedder.linear_2": ("time_embedding.2", _WB),
    "condition_embedder.time_proj": ("time_projection.1", _WB),
    "condition_embedder.text_embedder.linear_1": ("text_embedding.0", _WB),
    "condition_embedder.text_embedder.linear_2": ("text_embedding.2", _WB),
    # I2V 2.1 (CLIP image embedding): LayerNorm, Linear, GELU, Linear, LayerNorm.
    "condition_embedder.image_embedder.norm1": ("img_emb.proj.0", _WB),
    "condition_embedder.image_embedder.ff.net.0.proj": ("img_emb.proj.1", _WB),
    "condition_embedder.image_embedder.ff.net.2": ("img_emb.proj.3", _WB),
    "condition_embedder.image_embedder.norm2": ("img_emb.proj.4", _WB),
    "proj_out": ("head.head", _WB),
}
# Bare parameters outside the blocks (no `.weight` leaf): diffusers -> original.
_TOP_PARAMS: dict[str, str] = {
    "scale_shift_table": "head.modulation",
    "condition_embedder.image_embedder.pos_embed": "img_emb.emb_pos",  # FLF2V only
}

# Modules inside `blocks.N.`: diffusers path -> (original path, parameter leaves).
_BLOCK_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "attn1.to_q": ("self_attn.q", _WB),
    "attn1.to_k": ("self_attn.k", _WB),
    "attn1.to_v": ("self_attn.v", _WB),
    "attn1.to_out.0": ("self_attn.o", _WB),
    "attn1.norm_q": ("self_attn.norm_q", _W),
    "attn1.norm_k": ("self_attn.norm_k", _W),
    "attn2.to_q": ("cross_attn.q", _WB),
    "attn2.to_k": ("cross_attn.k", _WB),
    "attn2.to_v": ("cross_attn.v", _WB),
    "attn2.to_out.0": ("cross_attn.o", _WB),
    "attn2.norm_q": ("cross_attn.norm_q", _W),
    "attn2.norm_k": ("cross_attn.norm_k", _W),
    # I2V 2.1 image stream of the cross-attention.
    "attn2.add_k_proj": ("cross_attn.k_img", _WB),
    "attn2.add_v_proj": ("cross_attn.v_img", _WB),
    "attn2.norm_added_k": ("cross_attn.norm_k_img", _W),
    "norm2": ("norm3", _WB),  # the cross-attention LayerNorm (see module docstring)
    "ffn.net.0.proj": ("ffn.0", _WB),
    "ffn.net.2": ("ffn.2", _WB),
}
_BLOCK_PARAMS: dict[str, str] = {"scale_shift_table": "modulation"}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _invert(table: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {orig: (diff, leaves) for diff, (orig, leaves) in table.items()}


_TOP_MODULES_INV = _invert(_TOP_MODULES)
_BLOCK_MODULES_INV = _invert(_BLOCK_MODULES)
_TOP_PARAMS_INV = {v: k for k, v in _TOP_PARAMS.items()}
_BLOCK_PARAMS_INV = {v: k for k, v in _BLOCK_PARAMS.items()}


class UnknownWanKeyError(ModelLoadError):
    """A tensor or module name that is not part of any supported Wan transformer.

    `key` holds the offending name so callers (e.g. the LoRA reader) can re-raise with the file."""

    def __init__(self, key: str, naming: str, what: str = "tensor") -> None:
        self.key = key
        super().__init__(
            f"unknown Wan transformer {what} {key!r} in {naming} naming: it is not part of Wan 2.1/2.2 "
            "T2V, I2V or TI2V-5B (VACE / Animate checkpoints and other families are not supported); "
            "check that the file is a Wan transformer"
        )


def strip_original_prefix(key: str) -> str:
    """Drop a leading `model.diffusion_model.` / `diffusion_model.` (ComfyUI's prefixes)."""
    for prefix in ORIGINAL_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _split_block(name: str) -> tuple[str, str]:
    """('blocks.N.', rest) for block names, ('', name) otherwise."""
    match = _BLOCK_RE.match(name)
    if match:
        return f"blocks.{match.group(1)}.", match.group(2)
    return "", name


def _translate_key(
    key: str,
    naming: str,
    top_modules: dict[str, tuple[str, tuple[str, ...]]],
    top_params: dict[str, str],
    block_modules: dict[str, tuple[str, tuple[str, ...]]],
    block_params: dict[str, str],
) -> str:
    block, rest = _split_block(key)
    modules, params = (block_modules, block_params) if block else (top_modules, top_params)
    if rest in params:
        return block + params[rest]
    module, _, leaf = rest.rpartition(".")
    if module in modules:
        target, leaves = modules[module]
        if leaf in leaves:
            return f"{block}{target}.{leaf}"
    raise UnknownWanKeyError(key, naming)


def _translate_module(
    name: str,
    naming: str,
    top_modules: dict[str, tuple[str, tuple[str, ...]]],
    block_modules: dict[str, tuple[str, tuple[str, ...]]],
) -> str:
    block, rest = _split_block(name)
    modules = block_modules if block else top_modules
    if rest in modules:
        return block + modules[rest][0]
    raise UnknownWanKeyError(name, naming, what="module")


def original_to_diffusers_key(key: str) -> str:
    """Diffusers' name of a state-dict tensor given by its original Wan name.

    A `model.diffusion_model.` / `diffusion_model.` prefix is stripped first. Raises
    `UnknownWanKeyError` (a `ModelLoadError`) for any name outside the table."""
    return _translate_key(
        strip_original_prefix(key), "original Wan", _TOP_MODULES_INV, _TOP_PARAMS_INV, _BLOCK_MODULES_INV, _BLOCK_PARAMS_INV
    )


def diffusers_to_original_key(key: str) -> str:
    """Original Wan name (no prefix) of a `WanTransformer3DModel` state-dict tensor.

    Raises `UnknownWanKeyError` for any name outside the table."""
    return _translate_key(key, "diffusers", _TOP_MODULES, _TOP_PARAMS, _BLOCK_MODULES, _BLOCK_PARAMS)


def original_to_diffusers_module(name: str) -> str:
    """Diffusers' path of a parameterised module given by its original Wan path.

    For LoRA keys: `blocks.0.self_attn.q` -> `blocks.0.attn1.to_q`. The prefix is stripped as for
    keys. Only modules that hold parameters (Linear, Conv3d, norms) are in the table."""
    return _translate_module(strip_original_prefix(name), "original Wan", _TOP_MODULES_INV, _BLOCK_MODULES_INV)


def diffusers_to_original_module(name: str) -> str:
    """Original Wan path (no prefix) of a parameterised `WanTransformer3DModel` module path."""
    return _translate_module(name, "diffusers", _TOP_MODULES, _BLOCK_MODULES)


def original_to_diffusers_state_dict(state: dict) -> dict:
    """Rename a whole original-named state dict (same tensor objects, new keys).

    Raises on the first unknown key, and when two names land on the same diffusers name (e.g. a
    file holding both prefixed and unprefixed copies) instead of silently keeping one."""
    out: dict = {}
    for key, value in state.items():
        new = original_to_diffusers_key(key)
        if new in out:
            raise ModelLoadError(f"Wan transformer tensor {new!r} appears twice (again as {key!r}); keep one copy")
        out[new] = value
    return out


def diffusers_to_original_state_dict(state: dict, prefix: str = "") -> dict:
    """Rename a whole `WanTransformer3DModel` state dict to original names, with an optional prefix
    (`"model.diffusion_model."` is what ComfyUI's own single-file checkpoints carry)."""
    return {prefix + diffusers_to_original_key(key): value for key, value in state.items()}


def key_naming(keys) -> str:
    """'diffusers' or 'original': which naming a transformer state dict's keys use, all of them.

    Both are tried in full (a single file with Wan's names, with or without a ComfyUI prefix, or
    a diffusers shard); a dict that fits neither raises the error of the naming that matched
    more keys, naming the first key it did not know."""
    keys = list(keys)
    if not keys:
        raise ModelLoadError("the Wan transformer weights hold no tensors")
    failures: list[tuple[int, UnknownWanKeyError]] = []
    for naming, translate in (("diffusers", diffusers_to_original_key), ("original", original_to_diffusers_key)):
        for index, key in enumerate(keys):
            try:
                translate(key)
            except UnknownWanKeyError as exc:
                failures.append((index, exc))
                break
        else:
            return naming
    raise max(failures, key=lambda item: item[0])[1]


# kohya / musubi LoRA names flatten the original module path with underscores
# (`lora_unet_blocks_0_cross_attn_k_img`); since Wan's own names contain underscores
# (`self_attn`, `k_img`, `time_projection`), only the table can tell where the dots were.
MUSUBI_PREFIX = "lora_unet_"
_FLAT_TOP = {orig.replace(".", "_"): orig for orig in _TOP_MODULES_INV}
_FLAT_BLOCK = {orig.replace(".", "_"): orig for orig in _BLOCK_MODULES_INV}
_FLAT_BLOCK_RE = re.compile(r"^blocks_(\d+)_(.+)$")
assert len(_FLAT_TOP) == len(_TOP_MODULES_INV) and len(_FLAT_BLOCK) == len(_BLOCK_MODULES_INV)


def original_module_to_flat(name: str) -> str:
    """`blocks.0.cross_attn.k_img` -> `lora_unet_blocks_0_cross_attn_k_img` (musubi's LoRA name)."""
    original_to_diffusers_module(name)  # validates, raising on unknown names
    return MUSUBI_PREFIX + strip_original_prefix(name).replace(".", "_")


def flat_to_original_module(flat: str) -> str:
    """`lora_unet_blocks_0_cross_attn_k_img` (or without `lora_unet_`) -> `blocks.0.cross_attn.k_img`."""
    rest = flat[len(MUSUBI_PREFIX):] if flat.startswith(MUSUBI_PREFIX) else flat
    match = _FLAT_BLOCK_RE.match(rest)
    if match and match.group(2) in _FLAT_BLOCK:
        return f"blocks.{match.group(1)}.{_FLAT_BLOCK[match.group(2)]}"
    if rest in _FLAT_TOP:
        return _FLAT_TOP[rest]
    raise UnknownWanKeyError(flat, "musubi (lora_unet_)", what="module")
