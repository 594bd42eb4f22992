#!/usr/bin/env bash
# The guide's command: train a UFO LoRA on static clips with configs/train_ufo.toml.
#
#   export MODEL_NAME="models/Diffusion_Transformer/EasyAnimateV5.1-12b-zh-InP"
#   export DATASET_NAME="datasets/internal_datasets/"
#   export DATASET_META_NAME="datasets/internal_datasets/metadata.json"
#   bash scripts/train_ufo.sh --max_train_steps=3000 --checkpointing_steps=100 [more reference flags or key=value]
#
# The reference script's flags (--rank=128 --low_vram --mixed_precision=bf16 ...) are translated
# to config overrides by ufo_video.train.legacy_flags; an unknown flag is an error. Any config key
# can also be given as key=value. Environment: CONFIG (another config file), PYTHON (interpreter;
# default: the project's .venv made by scripts/setup_env.sh, so no venv needs to be active),
# LAUNCHER (default "accelerate launch"; e.g. LAUNCHER="accelerate launch --num_processes 4" for
# 4 GPUs, or LAUNCHER=python for a plain single-process run).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="${CONFIG:-$HERE/../configs/train_ufo.toml}"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$HERE/../.venv/bin/python" ]; then PYTHON="$HERE/../.venv/bin/python"; else PYTHON=python; fi
fi
if ! "$PYTHON" -c 'import ufo_video' 2>/dev/null; then
  echo "error: $PYTHON cannot import ufo_video; run 'bash scripts/setup_env.sh' first (it makes .venv)," \
       "or set PYTHON to an interpreter that has it" >&2
  exit 2
fi
# what Ctrl-C's resume hint repeats (the command as typed, plus --resume_from_checkpoint=latest)
UFO_SCRIPT_COMMAND="$("$PYTHON" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' bash "$0" "$@")"
export UFO_SCRIPT_COMMAND
MODEL_NAME="${MODEL_NAME:-models/Diffusion_Transformer/EasyAnimateV5.1-12b-zh-InP}"
DATASET_NAME="${DATASET_NAME:-datasets/internal_datasets/}"
DATASET_META_NAME="${DATASET_META_NAME:-datasets/internal_datasets/metadata.json}"

if [ -z "${LAUNCHER:-}" ]; then
  BIN="$(dirname "$PYTHON")"
  if [ -x "$BIN/accelerate" ]; then LAUNCHER="$BIN/accelerate launch"
  elif command -v accelerate >/dev/null 2>&1 && [ "$PYTHON" = python ]; then LAUNCHER="accelerate launch"
  else LAUNCHER="$PYTHON"; fi
fi

overrides_file="$(mktemp)"
trap 'rm -f "$overrides_file"' EXIT
"$PYTHON" -m ufo_video.train.legacy_flags -0 -- \
  --pretrained_model_name_or_path="$MODEL_NAME" \
  --train_data_dir="$DATASET_NAME" \
  --train_data_meta="$DATASET_META_NAME" \
  "$@" > "$overrides_file"
mapfile -d '' -t OVERRIDES < "$overrides_file"

# shellcheck disable=SC2086  # LAUNCHER is a command with its own arguments
$LAUNCHER -m ufo_video train "$CONFIG" "${OVERRIDES[@]}"
