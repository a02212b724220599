#!/usr/bin/env bash
# One command on a fresh machine: install, then run Redis + a worker + the API on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/mapcascade ] || scripts/install.sh
exec .venv/bin/mapcascade serve "$@"
