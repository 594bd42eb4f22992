"""Start-up stays fast: parsing (`--help`, argument errors) imports no heavy library, and the
top-level help lists every command with the same one-line help as its module registers."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ufo_video.cli import COMMANDS, build_parser

HEAVY = ("torch", "transformers", "diffusers", "accelerate", "peft", "av", "cv2")
SRC = str(Path(__file__).resolve().parent.parent / "src")

_PROBE = """
import json, sys
from ufo_video.cli import build_parser, main
argv = json.loads(sys.argv[1])
try:
    main(argv)
except SystemExit:
    pass
print("HEAVY=" + json.dumps([m for m in {heavy!r} if m in sys.modules]))
"""


def _probe(argv: list[str]) -> tuple[list[str], str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), json.dumps(argv)],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    line = [x for x in proc.stdout.splitlines() if x.startswith("HEAVY=")][-1]
    return json.loads(line[len("HEAVY="):]), proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["generate", "--help"], ["data", "check", "--help"], ["eval", "--help"],
     ["lora", "--help"], ["demo", "--help"], ["model", "--help"], ["generate", "--no-such-flag"],
     ["nosuchcommand"], ["sweep", "--help"], ["bench", "--help"], ["ui", "--help"]],
)
def test_help_and_argument_errors_import_no_heavy_library(argv):
    heavy, output = _probe(argv)
    assert heavy == [], f"{argv} imported {heavy}"
    assert "usage:" in output


def test_top_level_help_lists_every_command():
    _, output = _probe(["--help"])
    for name in COMMANDS:
        assert name in output


def _help_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {c.dest: c.help for c in action._choices_actions}


def test_placeholder_help_equals_each_modules_own_help():
    """The table in cli.py cannot drift from what each module registers."""
    assert _help_of(build_parser([])) == _help_of(build_parser([], full=True))


@pytest.mark.parametrize("argv", [
    ["train", "c.toml", "--threads", "1", "a=1", "b=2"],
    ["train", "c.toml", "a=1", "--threads", "1", "b=2"],
    ["generate", "a=1", "--threads", "1", "b=2"],
    ["sweep", "--lora", "x", "a=1", "--threads", "1", "b=2"],
    ["data", "cache", "c.toml", "a=1", "--threads", "1", "b=2"],
])  # fmt: skip
def test_overrides_may_come_before_between_and_after_options(argv):
    args = build_parser(argv).parse_args(argv)
    assert args.overrides == ["a=1", "b=2"] and args.threads == 1


def test_commands_that_need_no_model_import_no_diffusers(tmp_path):
    """`lora inspect` and `lora convert` (no --model), `eval`, `data check`, `data stats`,
    `model check --meta` on shipped configs and `bench --help` run without importing diffusers
    (its import alone costs seconds: it pulls torch._dynamo); the converted file is right."""
    from test_train_helpers import make_dataset

    from ufo_video.media_write import write_video

    data = make_dataset(tmp_path / "ds", images=1, videos=1)
    video = tmp_path / "v.mp4"
    import numpy as np

    write_video(np.zeros((5, 32, 32, 3), np.uint8), video, fps=8)
    lora = tmp_path / "l.safetensors"
    from safetensors.torch import save_file
    import torch

    save_file({"lora_unet__x.lora_down.weight": torch.zeros(2, 4), "lora_unet__x.lora_up.weight": torch.zeros(4, 2)},
              str(lora))  # fmt: skip
    kohya = tmp_path / "k.safetensors"  # a module of the bundled configs' names (musubi spelling)
    save_file({"lora_unet_blocks_0_self_attn_q.lora_down.weight": torch.ones(2, 8),
               "lora_unet_blocks_0_self_attn_q.lora_up.weight": torch.ones(8, 2),
               "lora_unet_blocks_0_self_attn_q.alpha": torch.tensor(4.0)}, str(kohya))  # fmt: skip
    meta = str(data / "metadata.json")
    configs = str(Path(SRC) / "ufo_video" / "assets" / "wan-configs" / "wan2.1-t2v-1.3b")
    for argv in (["lora", "inspect", str(lora)], ["eval", str(video)], ["data", "check", meta],
                 ["data", "stats", meta], ["bench", "--help"], ["model", "check", "--meta", configs],
                 ["lora", "convert", str(kohya), str(tmp_path / "p.safetensors"), "--to", "peft"]):  # fmt: skip
        heavy, out = _probe(argv)
        assert "diffusers" not in heavy, (argv, out[-2000:])
    assert "1,418,996,800" in _probe(["model", "check", "--meta", configs])[1]  # the 1.3B transformer
    from ufo_video.lora.formats import read_lora

    converted = read_lora(tmp_path / "p.safetensors")
    assert list(converted.modules) == ["blocks.0.attn1.to_q"] and converted.modules["blocks.0.attn1.to_q"].alpha == 4.0


def test_the_demo_time_is_one_measured_figure_everywhere_and_setup_installs_no_browser():
    """README, `ufo-video --help` and scripts/demo.sh state the same measured demo time (issue 24:
    "~1 min", "about a minute" and "a few minutes" disagreed); setting up for the demo installs no
    browser (only scripts/test.sh does, for the browser test)."""
    root = Path(SRC).parent
    readme = next(line for line in (root / "README.md").read_text().splitlines() if "bash scripts/demo.sh" in line)
    demo_sh = (root / "scripts" / "demo.sh").read_text()
    for text in (readme, demo_sh, COMMANDS["demo"][1]):
        assert "2.5 min" in text and "2 shared" in text, text[:300]
    assert "150-157 s measured" in demo_sh
    assert "chromium" not in (root / "scripts" / "setup_env.sh").read_text()
    assert "apt-get install -y -qq chromium chromium-driver" in (root / "scripts" / "test.sh").read_text()
