#!/usr/bin/env bash
# Builds a Python 3.11 base image from Debian packages alone (debootstrap + docker import), for
# hosts that cannot pull python:3.11-slim from Docker Hub. Use it as the Dockerfile's base:
#   docker build --build-arg BASE_IMAGE=mapcascade/python:3.11-bookworm .
# Needs root, debootstrap and a Debian mirror (MIRROR, default deb.debian.org). About a minute.
set -euo pipefail

TAG=${1:-mapcascade/python:3.11-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists"
    exit 0
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
# bookworm's python3 is 3.11, like the default base. python3-venv: the Dockerfile installs into
# a venv (Debian's system Python refuses pip installs, PEP 668); passwd: useradd.
debootstrap --variant=minbase --include=python3,python3-venv,passwd \
    bookworm "$rootfs" "$MIRROR" >/dev/null
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase bookworm + python3" \
    - "$TAG" >/dev/null
echo "built base image $TAG: $(docker run --rm "$TAG" python3 --version)"
