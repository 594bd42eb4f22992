"""Config: validation, overrides, error messages, and every shipped example config."""

from __future__ import annotations

from pathlib import Path

import pytest

from ufo_video.config import UfoConfig, apply_overrides, config_to_toml, load_config
from ufo_video.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_defaults_follow_reference_recipe() -> None:
    cfg = UfoConfig()
    assert cfg.lora.rank == 128 and cfg.lora.network_alpha == 64
    assert cfg.train.learning_rate == 1e-4 and cfg.train.adam_weight_decay == 5e-2
    assert cfg.train.adam_epsilon == 1e-10 and cfg.train.max_grad_norm == 0.05
    assert cfg.data.video_sample_n_frames == 49 and cfg.data.clip_mode == "static"
    assert cfg.infer.lora_weight == 0.15 and cfg.infer.sample_size == (384, 672)


def test_bare_and_dotted_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[train]\nlearning_rate = 3e-4\n[data]\nvideo_sample_n_frames = 17\n")
    cfg = load_config(cfg_file, ["rank=16", "train.max_train_steps=7", "sample_size=[256, 512]"])
    assert cfg.train.learning_rate == 3e-4
    assert cfg.data.video_sample_n_frames == 17
    assert cfg.lora.rank == 16 and cfg.train.max_train_steps == 7
    assert cfg.infer.sample_size == (256, 512)


def test_yaml_file(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("lora:\n  rank: 8\n  target_modules: [attn1.to_q, attn1.to_k]\n")
    cfg = load_config(f)
    assert cfg.lora.target_modules == ["attn1.to_q", "attn1.to_k"]


def test_unknown_key_names_key_and_suggestion(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[train]\nlearning_rat = 1e-4\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "train.learning_rat" in str(err.value) and "learning_rate" in str(err.value)
    assert str(f) in str(err.value)


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'rnak'.*rank"):
        load_config(None, ["rnak=4"])


def test_ambiguous_bare_key_asks_for_section() -> None:
    with pytest.raises(ConfigError, match="train.seed, infer.seed"):
        load_config(None, ["seed=1"])


@pytest.mark.parametrize(
    "override, needle",
    [
        ("learning_rate=-1", "train.learning_rate"),
        ("rank=abc", "lora.rank"),
        ("sample_size=[384, -16]", "positive"),
        ("GPU_memory_mode=turbo", "model_cpu_offload"),
        ("clip_mode=moving", "static"),
    ],
)
def test_bad_values_name_key_and_allowed(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_override_syntax_error() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["learning_rate"])


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["rank=8", "prompt=a \"quoted\" cat", "validation_prompts=[a, b]"])
    f = tmp_path / "round.toml"
    f.write_text(config_to_toml(cfg))
    assert load_config(f) == cfg
    assert cfg.fingerprint() == load_config(f).fingerprint()


SHIPPED = sorted((REPO / "configs").glob("*.toml")) + sorted((REPO / "configs").glob("*.yaml"))


def test_configs_are_shipped() -> None:
    assert SHIPPED, "configs/ must hold annotated example configs"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_names_its_command(path: Path) -> None:
    load_config(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and ("ufo-video" in first or "bash scripts/" in first), first


def test_yaml_boolean_words_stay_strings_for_string_fields() -> None:
    cfg = load_config(None, ["mixed_precision=no", "gradient_checkpointing=no", "prompt=yes"])
    assert cfg.train.mixed_precision == "no"
    assert cfg.train.gradient_checkpointing is False
    assert cfg.infer.prompt == "yes"
