"""LTX-2's single-file transformer layout (LTX-2's original names, as ComfyUI users have it):
detected, loaded strictly through diffusers' own converter, and generating frame for frame as the
diffusers folder it was written from; what diffusers 0.42's converter does not cover (LTX-2.3,
the text connectors, bundled components) and any unmapped or missing tensor refused with one line.

The original-named file is the tiny transformer's tensors under the original names of the
project's LTX-2 name table (`lora_format.to_original_module_name`, checked against diffusers' LoRA
conversion in test_ltx2_lora_format.py) with ComfyUI's `model.diffusion_model.` prefix; each test
asserts that diffusers' single-file converter maps those names back to exactly the diffusers names
(so the file is what the converter reads), or, for 2.3, that it does not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from test_ltx2 import _generate
from ufo_video.cli import main
from ufo_video.errors import ModelLoadError
from ufo_video.models.ltx2.lora_format import to_original_module_name
from ufo_video.models.ltx2.single_file import ORIGINAL_PREFIX
from ufo_video.models.ltx2.tiny import make_tiny_ltx2
from ufo_video.models.registry import load_model, model_shell

SINGLE = "ltx-2-transformer.safetensors"


def _converter_names(keys) -> dict[str, str]:
    from diffusers.loaders.single_file_utils import convert_ltx2_transformer_to_diffusers

    return convert_ltx2_transformer_to_diffusers({k: k for k in keys})


def _to_single_file(folder: Path, *, extra: dict[str, torch.Tensor] | None = None, drop: str | None = None) -> dict:
    """Replace `folder/transformer`'s diffusers file by one original-named file; returns
    {original name: diffusers name}."""
    transformer = folder / "transformer"
    (diffusers_file,) = transformer.glob("*.safetensors")
    state = load_file(str(diffusers_file))
    names = {ORIGINAL_PREFIX + to_original_module_name(k): k for k in state}
    tensors = {orig: state[k] for orig, k in names.items() if k != drop}
    tensors.update(extra or {})
    diffusers_file.unlink()
    save_file(tensors, str(transformer / SINGLE))
    return names


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ltx2sf")
    diffusers_folder = make_tiny_ltx2(root / "diffusers")
    single = root / "single"
    shutil.copytree(diffusers_folder, single)
    names = _to_single_file(single)
    assert any(k.startswith(ORIGINAL_PREFIX + "patchify_proj") for k in names)  # really the original names
    assert {v: k for k, v in _converter_names(names).items()} == names  # diffusers' converter reads them back
    return diffusers_folder, single


def test_single_file_is_detected_and_generates_as_the_diffusers_folder(folders, tmp_path):
    diffusers_folder, single = folders
    assert model_shell(diffusers_folder).info.layout == "diffusers"
    assert model_shell(single).info.layout == "single-file"
    ours = load_model(single, components=("transformer",)).transformer.state_dict()
    ref = load_model(diffusers_folder, components=("transformer",)).transformer.state_dict()
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
    assert main(["model", "check", str(single), "--meta"]) == 0  # header shapes in diffusers' names
    assert np.array_equal(_generate(single, tmp_path / "single"), _generate(diffusers_folder, tmp_path / "diffusers"))


def _copy(folders, tmp_path: Path) -> Path:
    out = tmp_path / "m"
    shutil.copytree(folders[0], out)
    return out


def test_a_missing_or_unmapped_tensor_is_refused_naming_it(folders, tmp_path):
    missing = _copy(folders, tmp_path / "a")
    _to_single_file(missing, drop="proj_in.weight")
    with pytest.raises(ModelLoadError, match=r"missing tensors \(1\): proj_in\.weight") as info:
        load_model(missing, components=("transformer",))
    assert str(missing / "transformer" / SINGLE) in str(info.value)
    unknown = _copy(folders, tmp_path / "b")
    _to_single_file(unknown, extra={ORIGINAL_PREFIX + "not_a_module.weight": torch.zeros(2)})
    with pytest.raises(ModelLoadError, match=r"unexpected tensors \(1\): not_a_module\.weight"):
        load_model(unknown, components=("transformer",))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"vae.per_channel_statistics.mean-of-means": torch.zeros(8)}, "bundles other components besides the transformer"),
        ({"text_embedding_projection.aggregate_embed.weight": torch.zeros(2, 2)}, "text_embedding_projection"),
        ({ORIGINAL_PREFIX + "video_embeddings_connector.learnable_registers": torch.zeros(8, 16)}, "text-connector"),
    ],
)
def test_what_diffusers_converter_does_not_cover_is_refused(folders, tmp_path, capsys, extra, message):
    """An all-in-one ComfyUI checkpoint's other components, and the connectors that diffusers'
    converter drops: one line through the CLI, exit 2, naming the file."""
    folder = _copy(folders, tmp_path)
    _to_single_file(folder, extra=extra)
    assert main(["model", "check", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(folder / "transformer" / SINGLE) in err


def test_ltx23_single_file_is_refused_diffusers_converter_maps_20_names_only(tmp_path):
    folder = make_tiny_ltx2(tmp_path / "v23", version="2.3")
    names = _to_single_file(folder)
    converted = _converter_names(names)
    assert any("prompt_adaln_single" in k for k in converted)  # the converter leaves LTX-2.3's names as they are
    assert any(k.startswith("prompt_adaln.") for k in names.values())  # which diffusers' 2.3 model calls prompt_adaln
    with pytest.raises(ModelLoadError, match="LTX-2.3 transformer .*prompt_adaln_single"):
        load_model(folder, components=("transformer",))
