"""`model make-tiny` prints no DeepSpeed accelerator notice, and nothing about DeepSpeed is changed
for later work in the process (its logger keeps no filter; no environment variable is set)."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ufo_video.models.quiet_deepspeed import NOTICE, _DropCpuNotice

SRC = str(Path(__file__).resolve().parent.parent / "src")
_PROBE = """
import logging, os, sys
from ufo_video.cli import main
assert main(["model", "make-tiny", sys.argv[1]]) == 0
print("IMPORTED=", "deepspeed" in sys.modules, "FILTERS=", logging.getLogger("DeepSpeed").filters,
      "DS_ENV=", sorted(k for k in os.environ if k.startswith("DS_")))
"""


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
def test_make_tiny_prints_no_deepspeed_notice_and_leaves_it_as_it_was(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env = {k: v for k, v in env.items() if not k.startswith("DS_")}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "m")], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-2000:]
    assert NOTICE not in out and "[WARNING]" not in out, out[-2000:]
    assert "IMPORTED= True FILTERS= [] DS_ENV= []" in out


def test_the_filter_drops_only_the_cpu_notice():
    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("DeepSpeed", logging.WARNING, "x.py", 1, msg, None, None)

    keep = _DropCpuNotice()
    assert not keep.filter(record(f"{NOTICE}. If you have GPU or other accelerator, we were unable to detect it."))
    assert keep.filter(record("Setting ds_accelerator to cuda (auto detect)"))
