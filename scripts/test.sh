#!/usr/bin/env bash
# One command on a fresh machine: install with the dev tools, then run every test (CPU, minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh '.[dev]'
# Real clients and servers the tests drive: Debian's Chromium (browser tests), GDAL (WMTS, XYZ
# and MBTiles reads) and nginx (the front in deploy/nginx/); where they cannot be installed
# those tests skip and say why.
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v gdal_translate >/dev/null || missing="$missing gdal-bin"
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
.venv/bin/ruff check app worker model tests scripts benchmarks
.venv/bin/ruff format --check app worker model tests scripts benchmarks
.venv/bin/mypy  # app/, worker/ and model/ (pyproject.toml)
exec .venv/bin/python -m pytest -q -rs "$@"  # -rs: every skipped test says why
