# One image for the `api` and `worker` services (docker-compose.yml picks the command).
# torch from PyPI is the CUDA build on x86_64, so the same image runs on GPU hosts.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so code changes do not re-download torch.
# The stub README satisfies `readme =`; the empty build is uninstalled again.
COPY pyproject.toml ./
RUN touch README.md \
    && pip install . \
    && pip uninstall -y mapcascade \
    && rm -rf build README.md ./*.egg-info

# The project itself. Editable so that it runs from /app: app/main.py serves the
# static/ folder next to the package, and the demo weights live in model/weights/.
COPY README.md ./
COPY app ./app
COPY model ./model
COPY worker ./worker
COPY static ./static
RUN pip install --no-deps -e . && rm -rf build

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
