#!/usr/bin/env bash
# Fills deploy/wheelhouse/ with every wheel the image needs (linux x86_64, CPython 3.11), so that
# `docker build` installs with `pip install --no-index` and no internet (the Dockerfile uses the
# wheelhouse whenever it holds wheels). Run it on any host where pip reaches an index:
#   scripts/wheelhouse.sh          # torch as pip gives it: on x86_64 PyPI's CUDA build (GPU hosts)
#   scripts/wheelhouse.sh cpu      # CPU builds of torch and torchvision: a much smaller image
# Settings (environment):
#   TORCH_CPU_INDEX  the CPU builds' index (default https://download.pytorch.org/whl/cpu); where it
#                    cannot be reached, `+cpu` builds offered by pip's configured indexes and
#                    find-links are taken, and where there are none, pip's own (CUDA) builds
#   TORCH_VERSION    pin torch, e.g. to the build your GPU driver supports (torchvision follows)
#   PYTHON           the interpreter that runs pip (default python3; pip >= 22.3)
#   TARGET_PYTHON    an interpreter of the image's exact Python version (default PYTHON):
#                    markers such as `python_full_version < "3.11.3"` are evaluated with it
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=${1:-cuda}
PYTHON=${PYTHON:-python3}
TARGET_PYTHON=${TARGET_PYTHON:-$PYTHON}
OUT=deploy/wheelhouse
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
case "$VARIANT" in cpu | cuda) ;; *) echo "usage: $0 [cpu|cuda]" >&2 && exit 2 ;; esac

# pip download resolves for the image's platform, not this host's: bookworm has glibc 2.36.
target=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311)
for minor in $(seq 36 -1 17); do target+=(--platform "manylinux_2_${minor}_x86_64"); done
target+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

pip() { "$PYTHON" -m pip --python "$TARGET_PYTHON" --disable-pip-version-check "$@"; }

# The newest version of a package among pip's sources whose local label is `+cpu`.
newest_cpu_build() {
    pip index versions "$1" "${target[@]}" 2>/dev/null | sed -n 's/^Available versions: //p' |
        tr ',' '\n' | tr -d ' ' | grep '+cpu$' | head -1 || true
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
constraints=$work/constraints.txt
touch "$constraints"
# The project's dependencies and its build backend, read from pyproject.toml.
"$PYTHON" - >"$work/requirements.txt" <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
print("\n".join(project["build-system"]["requires"] + project["project"]["dependencies"]))
PY

# Start empty: wheels of an earlier run (another torch build) would be installed beside these.
mkdir -p "$OUT"
find "$OUT" -name '*.whl' -delete

if [ "$VARIANT" = cpu ]; then
    # From the CPU index alone: pip's configured extra indexes and find-links would offer the
    # CUDA build, which pip prefers whenever its version is higher.
    torch=torch${TORCH_VERSION:+==$TORCH_VERSION+cpu}
    if env -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL -u PIP_INDEX_URL PIP_CONFIG_FILE=/dev/null \
        "$PYTHON" -m pip --python "$TARGET_PYTHON" download --quiet --no-deps \
        --dest "$work/cpu" "${target[@]}" --index-url "$TORCH_CPU_INDEX" "$torch" torchvision \
        2>/dev/null && ls "$work"/cpu/torch-*+cpu-*.whl >/dev/null 2>&1; then
        echo "torch and torchvision (cpu) from $TORCH_CPU_INDEX"
        for wheel in "$work"/cpu/*.whl; do
            echo "$(basename "$wheel" | cut -d- -f1)==$(basename "$wheel" | cut -d- -f2)"
        done >>"$constraints"
        mv "$work"/cpu/*.whl "$OUT"/
    else
        # torchvision's CUDA build does not load beside a CPU torch (open_clip imports it), so
        # a CPU torch is only taken with a CPU torchvision.
        torch_version=${TORCH_VERSION:+$TORCH_VERSION+cpu}
        torch_version=${torch_version:-$(newest_cpu_build torch)}
        vision_version=$(newest_cpu_build torchvision)
        if [ -n "$torch_version" ] && [ -n "$vision_version" ]; then
            echo "torch $torch_version, torchvision $vision_version from pip's configured sources"
            printf 'torch==%s\ntorchvision==%s\n' "$torch_version" "$vision_version" >>"$constraints"
        else
            echo "WARNING: $TORCH_CPU_INDEX unreachable and pip's sources offer no CPU build of" \
                "torch${torch_version:+vision} (torch: ${torch_version:-none});" \
                "taking the torch pip gives (CUDA)" >&2
            VARIANT=cuda
        fi
    fi
fi
if [ "$VARIANT" = cuda ] && [ -n "${TORCH_VERSION:-}" ]; then
    echo "torch==$TORCH_VERSION" >>"$constraints"
fi

pip download --quiet --dest "$OUT" "${target[@]}" --find-links "$OUT" \
    -r "$work/requirements.txt" -c "$constraints"
python_version=$("$TARGET_PYTHON" -c 'import platform; print(platform.python_version())')
# What this wheelhouse was made for: scripts/compose-smoke.sh refills it when pyproject changes.
{
    echo "# scripts/wheelhouse.sh $VARIANT, Python $python_version, $(date -u +%Y-%m-%dT%H:%MZ)"
    cat "$work/requirements.txt"
} >"$OUT/requirements.txt"
echo "$OUT: $(find "$OUT" -name '*.whl' | wc -l) wheels for Python $python_version," \
    "$(du -sh "$OUT" | cut -f1); $(find "$OUT" \( -name 'torch-*.whl' -o -name 'torchvision-*.whl' \) -printf '%f ')"
