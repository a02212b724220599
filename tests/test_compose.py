"""The Docker deployment as files: docker-compose.yml, Dockerfile, .dockerignore, example layers.

No Docker engine is needed; `docker compose config` runs too where the compose plugin exists.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.settings import demo_layer, load_layers_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def mounts(service: dict) -> dict[str, str]:
    """target -> source, for short (`src:dst[:ro]`) and long volume syntax alike."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v["source"], v["target"]
        out[target] = source
    return out


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else test


def test_services_and_named_volumes(compose: dict, services: dict) -> None:
    assert set(services) == {"redis", "api", "worker", "nginx", "nginx-config"}
    assert set(compose["volumes"]) == {"tiles", "weights", "redis-data"}


def test_redis_persists_and_reports_health(services: dict) -> None:
    redis = services["redis"]
    assert redis["image"].split(":")[1].startswith("7")
    cmd = command(redis)
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    assert mounts(redis) == {"/data": "redis-data"}
    assert "redis-cli ping" in healthcheck_text(redis)


def test_api_runs_four_uvicorn_workers_on_port_8000(services: dict) -> None:
    api = services["api"]
    cmd = command(api)
    assert cmd[:2] == ["mapcascade", "api"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--port") + 1] == "8000"
    assert cmd[cmd.index("--workers") + 1] == "4"
    assert "ports" not in api  # clients reach it through nginx only
    assert api["expose"] == ["8000"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/health" in healthcheck_text(api)
    assert "127.0.0.1:8000" in healthcheck_text(api)


def test_nginx_is_in_front_serving_the_tiles_volume_read_only(services: dict) -> None:
    nginx, api, render = services["nginx"], services["api"], services["nginx-config"]
    assert nginx["image"].startswith("nginx:")
    assert nginx["ports"] == ["${MAPCASCADE_PORT:-8000}:80"]
    (tiles,) = [v for v in nginx["volumes"] if v["source"] == "tiles"]
    assert (
        tiles["read_only"] is True and tiles["target"] == api["environment"]["MAPCASCADE_DATA_DIR"]
    )
    assert nginx["depends_on"]["nginx-config"]["condition"] == "service_completed_successfully"
    # The config is rendered from the api's settings, where nginx's default.conf includes it.
    cmd = command(render)
    assert cmd[:2] == ["mapcascade", "nginx-config"]
    assert cmd[cmd.index("--api") + 1] == "api:8000" and cmd[cmd.index("--listen") + 1] == "80"
    assert cmd[cmd.index("--tiles-dir") + 1] == tiles["target"] + "/tiles"
    out = cmd[cmd.index("--out") + 1]
    assert out.startswith(tiles["target"] + "/") and not out.startswith(tiles["target"] + "/tiles/")
    include = (ROOT / "deploy" / "nginx" / "default.conf").read_text()
    assert f"include {out};" in include
    (conf,) = [v for v in nginx["volumes"] if v["target"] == "/etc/nginx/conf.d/default.conf"]
    assert conf["source"] == "./deploy/nginx/default.conf"
    assert render["image"] == api["image"] and mounts(render)[tiles["target"]] == "tiles"
    assert mounts(render)["/app/deploy/nginx"] == "./deploy/nginx"  # the template
    settings = ("MAPCASCADE_LAYERS_FILE", "MAPCASCADE_DATA_DIR", "MAPCASCADE_CORS_ORIGINS",
                "MAPCASCADE_CACHE_MAX_AGE")  # fmt: skip
    for key in settings:
        assert render["environment"][key] == api["environment"][key], key
    layers = api["environment"]["MAPCASCADE_LAYERS_FILE"]
    assert mounts(render)[layers] == mounts(api)[layers]
    # The api believes forwarded client addresses from nginx's fixed address, and only that.
    address = nginx["networks"]["default"]["ipv4_address"]
    assert json.loads(api["environment"]["MAPCASCADE_TRUSTED_PROXIES"]) == [address]


def test_worker_reserves_one_nvidia_gpu(services: dict) -> None:
    worker = services["worker"]
    assert command(worker) == ["mapcascade", "worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    env = worker["environment"]
    assert env["MAPCASCADE_DEVICE"] == "cuda"
    assert "fp16" in env["MAPCASCADE_DTYPE"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_worker_can_be_scaled(services: dict) -> None:
    # `--scale worker=N` fails on a fixed container name or host port.
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "replicas" not in worker.get("deploy", {})
    # The image healthcheck probes HTTP, which a worker does not serve.
    assert worker["healthcheck"] == {"disable": True}


def test_api_and_worker_share_image_redis_store_and_layers(services: dict) -> None:
    api, worker = services["api"], services["worker"]
    assert api["image"] == worker["image"]
    for key in ("MAPCASCADE_REDIS_URL", "MAPCASCADE_DATA_DIR", "MAPCASCADE_LAYERS_FILE"):
        assert api["environment"][key] == worker["environment"][key], key
    # The compose service by default; other hosts' workers set MAPCASCADE_REDIS_URL.
    assert api["environment"]["MAPCASCADE_REDIS_URL"].endswith(":-redis://redis:6379/0}")
    data_dir = api["environment"]["MAPCASCADE_DATA_DIR"]
    assert mounts(api)[data_dir] == mounts(worker)[data_dir] == "tiles"
    assert mounts(worker)[worker["environment"]["MAPCASCADE_WEIGHTS_DIR"]] == "weights"
    layers = api["environment"]["MAPCASCADE_LAYERS_FILE"]
    assert mounts(api)[layers] == mounts(worker)[layers]


def test_default_layers_file_exists_and_validates(services: dict) -> None:
    target = services["api"]["environment"]["MAPCASCADE_LAYERS_FILE"]
    source = mounts(services["api"])[target]
    default = re.fullmatch(r"\$\{\w+:-(.+)\}", source)
    assert default, f"the layers mount should default to a repository file, got {source!r}"
    layers = load_layers_file(ROOT / default.group(1))
    assert layers.default_layer in {layer.name for layer in layers.layers}
    assert all(layer.max_zoom >= layer.root_zoom for layer in layers.layers)
    # Docker serves the demo layer as `mapcascade serve` does.
    (demo,) = [layer for layer in layers.layers if layer.name == "demo"]
    assert demo == demo_layer()


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_as_non_root_and_checks_health() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [arg for word, arg in instructions if word == "USER"]
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    # The user switch comes after every RUN that needs root.
    last_user = max(i for i, (w, _) in enumerate(instructions) if w == "USER")
    assert all(w != "RUN" for w, _ in instructions[last_user:])
    assert ("EXPOSE", "8000") in instructions
    health = [arg for word, arg in instructions if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]
    cmd = [arg for word, arg in instructions if word == "CMD"][-1]
    assert cmd.startswith('["mapcascade", "api"')


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore  # context is an allowlist: no data/, .venv/ or weights sent
    for word, arg in dockerfile_instructions():
        if word == "COPY":
            *sources, _dest = arg.split()
            for src in sources:
                assert src.rstrip("/").lstrip("./") in kept, f"{src} is excluded from the context"
    for package in ("app", "model", "worker", "static"):
        assert (ROOT / package).is_dir()


def _compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_plugin(), reason="needs the docker compose plugin")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_multi_gpu_override_pins_one_distinct_gpu_per_worker(services: dict) -> None:
    override = yaml.safe_load((ROOT / "deploy" / "compose.gpus.example.yml").read_text())
    workers = override["services"]
    assert len(workers) >= 2
    device_ids = []
    for name, worker in workers.items():
        # Same worker as docker-compose.yml in everything but the GPU it reserves.
        for key in set(worker) | set(services["worker"]):
            if key not in {"deploy", "build"}:
                assert worker.get(key) == services["worker"].get(key), (name, key)
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert "count" not in device  # count and device_ids exclude each other
        device_ids += device["device_ids"]
    assert len(device_ids) == len(set(device_ids)) == len(workers)
