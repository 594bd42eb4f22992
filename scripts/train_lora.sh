#!/usr/bin/env bash
# The README's name for the trainer: an ordinary video LoRA (moving clips, configs/train_lora.toml).
# Same environment (MODEL_NAME, DATASET_NAME, DATASET_META_NAME) and flags as scripts/train_ufo.sh.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="${CONFIG:-$HERE/../configs/train_lora.toml}" exec bash "$HERE/train_ufo.sh" "$@"
