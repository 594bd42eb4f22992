"""`ufo-video generate --blocks-to-swap N` (CPU: the offloader's code path with host and device both
the CPU): the same frames as without, with a LoRA, with fp8 storage and with both experts of a
Wan 2.2 A14B model; the errors that name the flag; the UI's field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_helpers import make_dataset, write_config

from ufo_video.cli import main

TINY = ["--sample-size", "32", "32", "--video-length", "5", "--steps", "2", "--dtype", "fp32", "--format", "png"]


@pytest.fixture(scope="module")
def ufo_lora(tiny_models, tmp_path_factory) -> Path:
    """A LoRA of the tiny EasyAnimate model, trained for one step at a large learning rate."""
    root = tmp_path_factory.mktemp("lora")
    data = make_dataset(root / "ds", images=2, videos=0)
    cfg = write_config(root / "c.toml", tiny_models["diffusers"], data, root / "out", max_train_steps=1,
                       checkpointing_steps=1, save_state=False, learning_rate=0.05, train_batch_size=1)  # fmt: skip
    assert main(["train", str(cfg)]) == 0
    return root / "out" / "checkpoint-1.safetensors"


@pytest.fixture(scope="module")
def wan_a14b(tmp_path_factory) -> Path:
    from ufo_video.models.wan.tiny import make_tiny_wan

    return make_tiny_wan(tmp_path_factory.mktemp("wan") / "a14b", "a14b")


def swapped_kib(printed: str) -> float:
    """The host memory the printed block-swap line reports (the weights really moved: not 0)."""
    import re

    number, unit = re.search(r"block swap: .* memory \(([\d.]+) (KiB|MiB|GiB)\)", printed).groups()
    return float(number) * {"KiB": 1, "MiB": 2**10, "GiB": 2**20}[unit]


def _frames(model: Path, out: Path, *extra: str) -> str:
    assert main(["generate", "--model", str(model), "--prompt", "a red kite", *TINY, "--out", str(out), *extra]) == 0
    return json.loads(out.with_suffix(".json").read_text())["frames_sha256"]


@pytest.mark.parametrize("extra", [[], ["--memory-mode", "model_cpu_offload_and_qfloat8"]], ids=["bf", "fp8"])
def test_generate_with_blocks_to_swap_equals_without(tiny_model, ufo_lora, tmp_path, capsys, extra):
    lora = ["--lora", f"{ufo_lora}:1.0", *extra]
    plain = _frames(tiny_model, tmp_path / "plain", *lora)
    assert "block swap" not in capsys.readouterr().out
    swapped = _frames(tiny_model, tmp_path / "swap", *lora, "--blocks-to-swap", "2")
    printed = capsys.readouterr().out
    assert "block swap: 2 of 2 transformer blocks in cpu memory" in printed and swapped_kib(printed) > 0
    assert swapped == plain
    assert json.loads((tmp_path / "swap.json").read_text())["settings"]["blocks_to_swap"] == 2


def test_generate_swaps_both_experts_of_a_two_expert_model(wan_a14b, tmp_path, capsys):
    plain = _frames(wan_a14b, tmp_path / "plain")
    swapped = _frames(wan_a14b, tmp_path / "swap", "--blocks-to-swap", "1")
    printed = capsys.readouterr().out
    assert "block swap: 1 of 2 transformer blocks in each of 2 denoisers" in printed and swapped_kib(printed) > 0
    assert swapped == plain


def test_generate_swaps_ltx2_blocks(tmp_path, capsys):
    from ufo_video.models.ltx2.tiny import make_tiny_ltx2

    model = make_tiny_ltx2(tmp_path / "ltx2")
    size = ["--sample-size", "64", "64", "--video-length", "9", "--guidance-scale", "3"]
    plain = _frames(model, tmp_path / "plain", *size)
    swapped = _frames(model, tmp_path / "swap", *size, "--blocks-to-swap", "2")
    printed = capsys.readouterr().out
    assert "block swap: 2 of 2 transformer blocks" in printed and swapped_kib(printed) > 0
    assert swapped == plain


def test_other_lora_files_on_a_loaded_model_with_block_swap(tiny_model, ufo_lora, tmp_path):
    """The web app swaps LoRA files on the loaded model (`replace_loras`): the new LoRA layers of
    swapped blocks join the device like the rest; the frames equal a fresh load with that LoRA."""
    from ufo_video.infer.engine import VideoGenerator
    from ufo_video.infer.settings import GenerationSettings, LoraSpec, VideoRequest

    base = GenerationSettings(str(tiny_model), (32, 32), 5, 8, 2, 6.0, "model_full_load", "fp32", blocks_to_swap=2)
    request = VideoRequest("a red kite", seed=3)
    said: list[str] = []
    gen = VideoGenerator(base, log=said.append)
    assert swapped_kib("\n".join(said)) > 0
    gen.generate(request)
    gen.replace_loras((LoraSpec(str(ufo_lora), 1.0),))
    swapped = gen.generate(request)
    fresh = VideoGenerator(GenerationSettings(str(tiny_model), (32, 32), 5, 8, 2, 6.0, "model_full_load", "fp32",
                                              loras=(LoraSpec(str(ufo_lora), 1.0),)), log=lambda _: None)  # fmt: skip
    assert (swapped == fresh.generate(request)).all()
    assert not (swapped == VideoGenerator(base, log=lambda _: None).generate(request)).all()  # the LoRA acts


@pytest.mark.parametrize("extra,message", [
    (["--blocks-to-swap", "3"], "--blocks-to-swap 3 (infer.blocks_to_swap) but the transformer has 2 blocks; give at most 2"),
    (["--blocks-to-swap", "1", "--memory-mode", "group_offload"], "with GPU_memory_mode=group_offload: both move"),
    (["--blocks-to-swap", "-1"], "infer.blocks_to_swap=-1"),
])  # fmt: skip
def test_generate_refuses_what_block_swap_cannot_do(tiny_model, tmp_path, capsys, extra, message):
    assert main(["generate", "--model", str(tiny_model), "--prompt", "x", *TINY, "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_sweep_takes_the_flag_too():
    from ufo_video.cli import build_parser

    args = build_parser(["sweep"]).parse_args(["sweep", "--lora", "x.safetensors", "--blocks-to-swap", "4"])
    assert args.blocks_to_swap == 4


def test_ui_settings_carry_blocks_to_swap(tmp_path):
    from ufo_video.ui.defaults import DEFAULT_MODEL
    from ufo_video.ui.session import load_key
    from ufo_video.ui.tab_generate import SETTING_NAMES, settings_from_values

    values = {"model": str(DEFAULT_MODEL), "height": 64, "width": 64, "frames": 9, "fps": 8, "steps": 2,
              "guidance": 6.0, "dtype": "fp32", "memory_mode": "model_full_load", "cache": "none", "blocks_to_swap": 3}
    settings = settings_from_values([values[n] for n in SETTING_NAMES], [], [])
    assert settings.blocks_to_swap == 3
    other = settings_from_values([{**values, "blocks_to_swap": 0}[n] for n in SETTING_NAMES], [], [])
    assert load_key(settings) != load_key(other)  # a change of it loads the model again
