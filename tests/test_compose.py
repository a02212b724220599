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
    assert set(services) == {"redis", "api", "worker", "nginx", "nginx-config", "seaweedfs"}
    assert set(compose["volumes"]) == {"tiles", "weights", "redis-data", "s3-data"}
    # Only the S3 server waits for its profile; everything else starts by default.
    assert {name for name, s in services.items() if "profiles" in s} == {"seaweedfs"}


STORE_ENV = ("MAPCASCADE_STORE", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ACCESS_KEY_ID",
             "AWS_SECRET_ACCESS_KEY")  # fmt: skip


def test_api_and_worker_read_the_store_settings(services: dict) -> None:
    for name in ("api", "worker"):
        env = services[name]["environment"]
        # Unset: the tiles volume (an empty MAPCASCADE_STORE means the default folder).
        assert env["MAPCASCADE_STORE"] == "${MAPCASCADE_STORE:-}"
        # The AWS variables pass through from the environment or .env only where set: an
        # empty endpoint or key would not mean "the AWS default".
        assert all(env[key] is None for key in STORE_ENV[1:]), name


def test_s3_profile_serves_the_bucket_the_store_names(services: dict) -> None:
    s3 = services["seaweedfs"]
    assert s3["profiles"] == ["s3"]
    assert "ports" not in s3  # reached by api and workers on the compose network only
    assert mounts(s3) == {"/data": "s3-data"}
    script = s3["command"][0]
    # The bucket of MAPCASCADE_STORE, made before the service reports healthy (the api and
    # workers stop at start without it), behind the key they sign with, on the port of the
    # documented AWS_ENDPOINT_URL.
    assert (
        s3["environment"]["MAPCASCADE_STORE"] == services["api"]["environment"]["MAPCASCADE_STORE"]
    )
    assert s3["environment"]["AWS_ACCESS_KEY_ID"] is None
    assert s3["environment"]["AWS_SECRET_ACCESS_KEY"] is None
    assert "bucket=$${MAPCASCADE_STORE#s3://}" in script
    created = script.index("s3.bucket.create -name $$bucket")
    assert script.index("touch /tmp/ready") > created
    assert "test -f /tmp/ready" in healthcheck_text(s3)
    assert "-s3.port=8333" in script
    assert "AWS_ENDPOINT_URL=http://seaweedfs:8333" in (ROOT / "docker-compose.yml").read_text()


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


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each a list of instructions starting with its FROM."""
    out: list[list[tuple[str, str]]] = []
    for word, arg in dockerfile_instructions():
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, arg))
    return out


def test_dockerfile_base_is_an_arg_defaulting_to_python_slim() -> None:
    instructions = dockerfile_instructions()
    # Before the first FROM, so that every stage's FROM can use it.
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    for stage in stages():
        assert stage[0][1].split()[0] == "${BASE_IMAGE}", stage[0]


def test_dockerfile_installs_offline_from_the_wheelhouse_in_a_build_stage() -> None:
    *builds, runtime = stages()
    (deps,) = builds
    name = deps[0][1].split()[-1]
    copies = [arg for word, arg in deps if word == "COPY"]
    assert "deploy/wheelhouse /wheelhouse" in copies
    install = " ".join(arg for word, arg in deps if word == "RUN")
    # Wheels in the wheelhouse: pip is given no index at all.
    assert "PIP_NO_INDEX=1" in install and "PIP_FIND_LINKS=/wheelhouse" in install
    # The runtime stage takes the installed environment, never the wheels.
    runtime_copies = [arg for word, arg in runtime if word == "COPY"]
    assert f"--from={name} /opt/venv /opt/venv" in runtime_copies
    assert not any("wheelhouse" in arg for arg in runtime_copies)
    assert ("ENV", "PATH=/opt/venv/bin:$PATH") in [(w, a) for w, a in deps if w == "ENV"] or any(
        "PATH=/opt/venv/bin:$PATH" in a for w, a in runtime if w == "ENV"
    )


def test_wheelhouse_is_ignored_by_git_but_its_readme_is_not() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")

    def ignored(path: str) -> bool:
        probe = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        return probe.returncode == 0

    assert ignored("deploy/wheelhouse/torch-2.4.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    assert not ignored("deploy/wheelhouse/README.md")
    assert (ROOT / "deploy" / "wheelhouse" / "README.md").is_file()


def test_dockerfile_runs_as_non_root_and_checks_health() -> None:
    instructions = stages()[-1]
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
        if word == "COPY" and not arg.startswith("--from="):  # other stages, not the context
            *sources, _dest = arg.split()
            for src in sources:
                assert src.rstrip("/").lstrip("./") in kept, f"{src} is excluded from the context"
    for package in ("app", "model", "worker", "static"):
        assert (ROOT / package).is_dir()


def compose_command() -> list[str] | None:
    """The Compose at hand: the v2 plugin, else docker-compose 1.29 (Debian's), else none."""
    if shutil.which("docker") is not None:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    return None


@pytest.mark.skipif(compose_command() is None, reason="needs docker compose or docker-compose")
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    compose = compose_command() or []
    path = ROOT / "docker-compose.yml"
    if compose == ["docker-compose"]:
        # Compose 1.29 predates the top-level `name` (its `-p` names the project): the rest of
        # the file is checked as it is, relative paths from the repository.
        spec = yaml.safe_load(path.read_text())
        assert spec.pop("name") == "mapcascade"
        path = tmp_path / "docker-compose.yml"
        path.write_text(yaml.safe_dump(spec))
        compose = [*compose, "--project-directory", str(ROOT)]
    result = subprocess.run(
        [*compose, "-f", str(path), "config", "--quiet"], capture_output=True, text=True, cwd=ROOT
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
