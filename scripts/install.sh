#!/usr/bin/env bash
# Creates .venv and installs mapcascade into it (editable). Extra arguments go to pip, e.g. '.[dev]'.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e "${1:-.}"
