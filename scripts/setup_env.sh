#!/usr/bin/env bash
# Create .venv and install ufo-video with every dependency, from nothing. Safe to re-run:
# it reinstalls only when pyproject.toml changed. Used by README's two commands and by CI.
#
# torch: on a machine with an NVIDIA GPU, PyPI's default (CUDA) build; without one, the CPU build
# pinned below. Set UFO_TORCH_SPEC to choose another (e.g. "torch==2.14.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))'; then
  echo "ufo-video needs Python 3.10-3.12; $("$PY" --version) found. Set PYTHON=/path/to/python3.x" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.ufo-installed
want=$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # say what happens: a first install downloads ~1 GB and is silent for minutes otherwise
  echo "setting up .venv (first time: downloads PyTorch and ~40 packages, usually 2-5 minutes; later runs skip this)" >&2
  echo "  [1/3] pip" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  TORCH_SPEC=${UFO_TORCH_SPEC:-torch==2.13.0}
  echo "  [2/3] $TORCH_SPEC (the largest download)" >&2
  .venv/bin/python -m pip install -q "$TORCH_SPEC"
  echo "  [3/3] ufo-video and its dependencies (diffusers, transformers, peft, accelerate, PyAV, DeepSpeed, ...)" >&2
  # DeepSpeed too, so the ZeRO-2 test runs in CI: a PyPI sdist that builds a pure-Python wheel
  # (about 30 s with its dependencies); it compiles its CPU op on first use (below)
  .venv/bin/python -m pip install -q -e ".[test,deepspeed]"
  # DeepSpeed's CPU accelerator compiles its shared-memory op with the C++ compiler (`c++`) and
  # Python's headers the first time the ZeRO-2 test runs (about a minute; cached in
  # ~/.cache/torch_extensions). Installed here when missing, as root.
  if ! command -v c++ >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing g++ for DeepSpeed's CPU op (apt-get)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
    else
      echo "note: the DeepSpeed test needs a C++ compiler: sudo apt-get install -y g++" >&2
    fi
  fi
  if ! .venv/bin/python -c 'import os, sys, sysconfig; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    echo "note: the DeepSpeed test needs this Python's headers (Python.h), e.g. apt-get install python3-dev" >&2
  fi
  echo "$want" > "$stamp"
  echo ".venv ready" >&2
fi
