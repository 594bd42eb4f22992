"""Shared fixtures: tiny EasyAnimate V5.1 models written once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one CPU thread unless told otherwise: the suite's tiny models run fastest so, the machine is
# shared, and bitwise comparisons between runs need one thread count (ufo_video.threads honours it)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parent.parent
REAL_12B_CONFIGS = REPO / "src" / "ufo_video" / "assets" / "easyanimate-v5.1-12b-inp-configs"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same random weights (seed 0) written in both layouts, plus a T2V variant."""
    from ufo_video.models.easyanimate.tiny import make_tiny

    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "diffusers": make_tiny(root / "inp-diffusers", layout="diffusers", variant="inp", seed=0),
        "original": make_tiny(root / "inp-original", layout="original", variant="inp", seed=0),
        "t2v": make_tiny(root / "t2v-diffusers", layout="diffusers", variant="t2v", seed=0),
    }


@pytest.fixture
def tiny_model(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["diffusers"]
