"""[infer] config fields reach the generation settings; CLI flags win over them."""

from __future__ import annotations

from ufo_video.config import load_config
from ufo_video.infer.settings import LoraSpec, settings_from_config


def test_config_loras_fuse_and_cache_flow_into_settings() -> None:
    cfg = load_config(None, [
        "lora_path=a.safetensors", "lora_weight=0.1", "loras=[{path: b.safetensors, weight: 0.5}]",
        "fuse_lora=true", "infer.cache=first-block", "cache_threshold=0.2",
    ])  # fmt: skip
    s = settings_from_config(cfg)
    assert s.loras == (LoraSpec("a.safetensors", 0.1), LoraSpec("b.safetensors", 0.5))
    assert s.fuse is True and s.cache == "first-block" and s.cache_threshold == 0.2


def test_explicit_arguments_win() -> None:
    cfg = load_config(None, ["fuse_lora=true", "infer.cache=first-block"])
    s = settings_from_config(cfg, loras=[], fuse=False, cache="none", cache_threshold=0.5)
    assert s.loras == () and s.fuse is False and s.cache == "none" and s.cache_threshold == 0.5
