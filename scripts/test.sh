#!/usr/bin/env bash
# One command on a fresh machine: install with the dev tools, then run every test (CPU, minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh '.[dev]'
# The browser tests drive Debian's Chromium; without it they skip and say so.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check app worker model tests
.venv/bin/ruff format --check app worker model tests
.venv/bin/mypy  # app/, worker/ and model/ (pyproject.toml)
exec .venv/bin/python -m pytest -q "$@"
