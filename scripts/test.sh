#!/usr/bin/env bash
# README's test command: set everything up from nothing, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# The web app's browser test (tests/test_ui_browser.py) drives Debian's Chromium through its
# chromedriver (no browser download at test time): installed here, for the tests only (the demo and
# everyday use never need a browser), when missing and when run as root; apt's own chatter goes to
# a log that is shown only if the install fails.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium and chromium-driver for the browser test (apt-get; about a minute)" >&2
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >"$log" 2>&1; then
      cat "$log" >&2
      echo "could not install chromium; the browser test will say what is missing" >&2
    fi
    rm -f "$log"
  else
    echo "note: the browser test needs chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver" >&2
  fi
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest -q "$@"
