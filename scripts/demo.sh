#!/usr/bin/env bash
# README's main command: set everything up from nothing, then run the demo on a tiny model.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "ufo-video demo: 1) set up .venv if needed, 2) run the demo (about 2.5 minutes on 2 shared CPU cores: 150-157 s measured)" >&2
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
# usage: bash scripts/demo.sh [OUT_DIR] [--quick]; the report is OUT_DIR/report.html
OUT=${1:-demo-out}
exec .venv/bin/ufo-video demo --out "$OUT" "${@:2}"
