"""README's commands run as written: every ```bash block carries a `readme-test` marker, and the
blocks marked `run` are executed here, in order, in a folder with the guide's layout (the repo's
configs, scripts, predict scripts and asset/ beside a datasets/internal_datasets/ made here),
with `ufo-video` and `python` being this checkout. Nothing is copied out of the README, so the
commands cannot drift from what is tested."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_train_helpers import make_dataset

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
MARKED = re.compile(r"<!-- readme-test: (run|skip \([^)]+\)) -->\n```bash\n(.*?)```", re.S)
LINKED = ("configs", "scripts", "src", "asset", "predict_t2v.py", "predict_i2v.py")


def readme_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    marked = MARKED.findall(text)
    assert len(marked) == len(BLOCK.findall(text)), (
        "every ```bash block in README.md needs a `<!-- readme-test: run -->` or "
        "`<!-- readme-test: skip (why) -->` line right before it"
    )
    return marked


def test_every_readme_block_is_marked_and_some_run():
    kinds = [kind for kind, _ in readme_blocks()]
    assert kinds.count("run") >= 5


def test_readme_run_blocks_work_as_written(tmp_path):
    work = tmp_path / "work dir"  # a space in the path, as users have
    work.mkdir()
    for name in LINKED:
        (work / name).symlink_to(REPO / name)
    make_dataset(work / "datasets" / "internal_datasets", images=2, videos=1)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("ufo-video", '-m ufo_video "$@"'), ("python", '"$@"')):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" {command}\n')
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")  # fmt: skip
    for kind, block in readme_blocks():
        if kind != "run":
            continue
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=work, env=env, capture_output=True,
                                text=True, timeout=600)  # fmt: skip
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"README block failed:\n{block}\n---\n{output[-4000:]}"
        assert "Traceback" not in output, f"README block printed a traceback:\n{block}\n---\n{output[-4000:]}"
    assert (work / "square.mp4").is_file() and (work / "tiny_i2v.mp4").is_file()
    assert (work / "output_tiny" / "checkpoint-2.safetensors").is_file()
    assert (work / "output_tiny" / "train-report.html").is_file()
    assert len(list((work / "samples" / "easyanimate-videos_i2v").glob("*.mp4"))) == 1
    import json

    sweep = json.loads((work / "tiny-sweep" / "sweep.json").read_text())
    assert sweep["recommendation"]["pairs"] == 4 and len(sweep["videos"]) == 8
