"""The shipped LTX-2 / 2.3 configs build the real architectures on the meta device, with the
parameter counts the checkpoints' names state (LTX-2 "19B", LTX-2.3 "22B") and the real 32x / 8x
VAE compression."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1] / "src" / "ufo_video" / "assets" / "ltx2-configs"
FOLDERS = ("ltx-2-19b-dev", "ltx-2-19b-distilled", "ltx-2.3-22b-dev", "ltx-2.3-22b-distilled")


def _meta(folder: str, name: str) -> torch.nn.Module:
    from diffusers import AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    classes = {"transformer": LTX2VideoTransformer3DModel, "connectors": LTX2TextConnectors, "vae": AutoencoderKLLTX2Video}
    config = json.loads((ROOT / folder / name / "config.json").read_text())
    assert config["_class_name"] == classes[name].__name__
    with torch.device("meta"):
        return classes[name].from_config(config)


def _billions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e9


@pytest.mark.parametrize("folder", ["ltx-2-19b-dev", "ltx-2.3-22b-dev"])
def test_parameter_counts_match_the_names(folder):
    transformer, connectors = _billions(_meta(folder, "transformer")), _billions(_meta(folder, "connectors"))
    if folder.startswith("ltx-2-19b"):
        assert transformer == pytest.approx(18.876, abs=0.001)  # "19B"
        assert connectors == pytest.approx(1.431, abs=0.001)
    else:
        assert transformer == pytest.approx(18.989, abs=0.001)
        assert transformer + connectors == pytest.approx(22.16, abs=0.01)  # "22B" counts the text connectors


@pytest.mark.parametrize("folder", FOLDERS)
def test_vae_compresses_32x_8x_and_transformer_matches_it(folder):
    vae = _meta(folder, "vae")
    assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (32, 8)
    t = json.loads((ROOT / folder / "transformer" / "config.json").read_text())
    assert (t["patch_size"], t["patch_size_t"], t["in_channels"]) == (1, 1, vae.config.latent_channels)
    assert t["vae_scale_factors"] == [8, 32, 32]


def test_base_and_distilled_differ_only_in_the_scheduler():
    for version in ("ltx-2-19b", "ltx-2.3-22b"):
        dev, distilled = ROOT / f"{version}-dev", ROOT / f"{version}-distilled"
        files = sorted(p.relative_to(dev) for p in dev.rglob("*.json"))
        assert files == sorted(p.relative_to(distilled) for p in distilled.rglob("*.json"))
        differing = {str(f) for f in files if (dev / f).read_text() != (distilled / f).read_text()}
        assert differing == {"scheduler/scheduler_config.json"}
        s = json.loads((distilled / "scheduler" / "scheduler_config.json").read_text())
        assert s["use_dynamic_shifting"] is False and s["shift_terminal"] is None
        s = json.loads((dev / "scheduler" / "scheduler_config.json").read_text())
        assert s["use_dynamic_shifting"] is True and s["shift_terminal"] == 0.1
