# One image for the `api` and `worker` services (docker-compose.yml picks the command).
# torch from PyPI is the CUDA build on x86_64, so the same image runs on GPU hosts.
#
# BASE_IMAGE: any Debian-like image with Python 3.11 and its venv module; where Docker Hub is out
# of reach, scripts/debian-base.sh builds one from Debian packages. Offline builds install from
# deploy/wheelhouse/ (filled by scripts/wheelhouse.sh) with --no-index whenever it holds wheels.
ARG BASE_IMAGE=python:3.11-slim

# Dependencies first, from pyproject.toml alone, so code changes do not re-install torch; into a
# venv (Debian's own Python refuses pip installs, PEP 668) that the runtime stage copies, so the
# wheelhouse never lands in the image.
FROM ${BASE_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY deploy/wheelhouse /wheelhouse
COPY pyproject.toml ./
# The stub README satisfies `readme =`; the empty build is uninstalled again. setuptools stays:
# the runtime stage installs the project without build isolation (no index needed there).
RUN if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        echo "installing offline from deploy/wheelhouse"; \
        export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse; \
    fi \
    && pip install "setuptools>=69" \
    && touch README.md \
    && pip install . \
    && pip uninstall -y mapcascade \
    && rm -rf build README.md ./*.egg-info

FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

COPY --from=deps /opt/venv /opt/venv
WORKDIR /app

# The project itself. Editable so that it runs from /app: app/main.py serves the
# static/ folder next to the package, and the demo weights live in model/weights/.
COPY pyproject.toml README.md ./
COPY app ./app
COPY model ./model
COPY worker ./worker
COPY static ./static
RUN pip install --no-deps --no-build-isolation -e . && rm -rf build

# Non-root. The mount points exist and belong to the user so that fresh named
# volumes mounted there inherit that ownership.
RUN useradd --create-home --uid 10001 mapcascade \
    && mkdir -p /data /weights \
    && chown mapcascade:mapcascade /data /weights
USER mapcascade

ENV MAPCASCADE_DATA_DIR=/data \
    MAPCASCADE_WEIGHTS_DIR=/weights \
    HF_HOME=/weights/huggingface

EXPOSE 8000
# python, not curl: the slim image has no curl. Only meaningful for the api; compose
# turns it off for workers, which serve no HTTP.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["mapcascade", "api", "--host", "0.0.0.0", "--port", "8000"]
