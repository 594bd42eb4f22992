"""LTX-2's single-file transformer (the original names ComfyUI / Lightricks checkpoints use), read
through diffusers' own converter and loaded strictly.

A folder in this layout is a diffusers LTX-2 folder whose `transformer/` holds its `config.json`
and ONE `.safetensors` file with LTX-2's original tensor names (`patchify_proj`, `adaln_single`,
`q_norm`, ..., with or without ComfyUI's `model.diffusion_model.` prefix), instead of diffusers'
names. The names are translated by diffusers' `convert_ltx2_transformer_to_diffusers` (what
`LTX2VideoTransformer3DModel.from_single_file` runs), applied to the keys alone, never by a table
of our own; then loading is strict as for every folder (`weights.load_strict`): every tensor of the
file lands on a parameter and every parameter is filled, else an error names the file and keys.
(`from_single_file` itself is not used: it loads with `strict=False` and only warns.)

What diffusers 0.42's converter does not cover, and is therefore refused with one line:
- LTX-2.3: the converter has no rename for its `prompt_adaln_single` / `audio_prompt_adaln_single`
  modules (diffusers' `prompt_adaln`), so a 2.3 file would leave them unfilled;
- the text connectors (`*_embeddings_connector.` inside the transformer's prefix, and the
  top-level `text_embedding_projection.`): the converter drops them from the transformer and
  diffusers has no single-file converter for `LTX2TextConnectors`;
- the other components of an all-in-one ComfyUI checkpoint (`vae.`, `audio_vae.`, `vocoder.`):
  diffusers converts the VAEs but not the vocoder; ufo-video reads only the transformer from a
  single file, the other components from their diffusers subfolders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from torch import nn

from ufo_video.errors import ModelLoadError
from ufo_video.models.weights import build_on_meta, compare_keys, expected_shapes, read_header_shapes

#: the prefix ComfyUI's LTX-2 checkpoints put before the transformer's original names
ORIGINAL_PREFIX = "model.diffusion_model."
#: what an all-in-one checkpoint bundles besides the transformer (diffusers' own detection keys
#: name `vae.` and `audio_vae.`; the vocoder and the connectors' projection sit beside them)
BUNDLED_PREFIXES = ("vae.", "audio_vae.", "vocoder.", "text_embedding_projection.")
CONNECTOR_PARTS = ("video_embeddings_connector", "audio_embeddings_connector")


def _convert(keys: Iterable[str]) -> dict[str, str]:
    """diffusers' converter applied to names only: {diffusers name: file name} of the keys it keeps."""
    from diffusers.loaders.single_file_utils import convert_ltx2_transformer_to_diffusers

    return convert_ltx2_transformer_to_diffusers({key: key for key in keys})


def single_transformer_file(folder: Path) -> Path | None:
    """The one `.safetensors` of `transformer/` when its names are LTX-2's original ones, else None
    (diffusers' names, shards, or no file). Only the header is read."""
    if not folder.is_dir() or any(folder.glob("*.safetensors.index.json")):
        return None
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        return None
    keys = list(read_header_shapes(files).keys())
    renamed = _convert(keys)
    return files[0] if set(renamed) != set(keys) else None  # diffusers' names pass the converter unchanged


def diffusers_names(file: Path) -> dict[str, str]:
    """{name in `file`: diffusers' name} for every tensor of an original-named transformer file;
    `ModelLoadError` naming the file for anything diffusers' converter does not map into the
    transformer (see the module docstring)."""
    keys = list(read_header_shapes([file]).keys())
    bundled = sorted({p for p in BUNDLED_PREFIXES for k in keys if k.startswith(p)})
    if bundled:
        raise ModelLoadError(
            f"{file}: bundles other components besides the transformer ({', '.join(bundled)}): ufo-video reads only "
            f"the transformer from a single file (diffusers has no single-file converter for the vocoder or the text "
            f"connectors); keep only its {ORIGINAL_PREFIX} tensors (without the *_embeddings_connector ones) in this "
            "file, or use the diffusers folder"
        )
    connectors = [k for k in keys if any(part in k for part in CONNECTOR_PARTS)]
    if connectors:
        raise ModelLoadError(
            f"{file}: holds {len(connectors)} text-connector tensor(s) (e.g. {connectors[0]}), which diffusers' LTX-2 "
            "converter drops from the transformer and cannot load elsewhere; remove them from this file (the "
            "connectors load from the folder's connectors/)"
        )
    renamed = _convert(keys)
    if len(renamed) != len(keys):
        lost = sorted(set(keys) - set(renamed.values()))
        raise ModelLoadError(f"{file}: diffusers' LTX-2 converter drops or merges tensor(s) {', '.join(lost[:5])}; not a "
                             "transformer file it converts")  # fmt: skip
    unconverted = sorted(k for k in keys if "prompt_adaln_single" in k)
    if unconverted:
        raise ModelLoadError(
            f"{file}: an LTX-2.3 transformer ({unconverted[0]}): diffusers 0.42's single-file converter maps LTX-2.0 "
            "names only (it has no rename for prompt_adaln_single), so this file cannot be loaded strictly; use the "
            "diffusers folder (Lightricks' LTX-2.3 diffusers repository)"
        )
    return {old: new for new, old in renamed.items()}


def check_names(file: Path, factory: Callable[[], nn.Module]) -> dict[str, str]:
    """`diffusers_names(file)`, checked against the transformer `factory` builds (on the meta
    device): a missing, unexpected or mis-shaped tensor is a `ModelLoadError` naming the file."""
    names = diffusers_names(file)
    shapes = {names[k]: shape for k, (shape, _dtype) in read_header_shapes([file]).items()}
    compare_keys(expected_shapes(build_on_meta(factory)), shapes, f"{file} (LTX-2's original names, as diffusers converts them)")
    return names
