"""Shared fixtures: a real Redis server, per-test settings and store, live worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from redis import Redis

from app.embedded import EmbeddedRedis
from app.settings import Settings
from tests.s3server import SeaweedS3

ROOT = Path(__file__).resolve().parents[1]
KAMPALA = ROOT / "tests" / "fixtures" / "imagery" / "kampala-oam"

# A small real-imagery layer: the Kampala aerial tiles (z19-21) read through the `dir` source.
# Its root block 18/154803/130818 covers the fixture's z19 tile 309606/261636 and the z20/z21
# tiles under it; the other three z19 children are no-data (transparent).
KAMPALA_LAYER = {
    "name": "kampala",
    "title": "Kampala test layer",
    "attribution": "Imagery OpenAerialMap CC-BY 4.0",
    "imagery": {"type": "dir", "path": str(KAMPALA)},
    "bounds": [32.5896, 0.3475, 32.5909, 0.3488],
    "root_zoom": 19,
    "max_zoom": 22,
    "model": "tiny",
    "reference_span": 4,
}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 server (SeaweedFS) for the session; each test takes its own bucket."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: SeaweedS3) -> str:
    return s3_server.new_bucket()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield redis_server.url
    client.flushall()
    client.close()


@pytest.fixture
def make_settings(tmp_path: Path, redis_url: str) -> Callable[..., Settings]:
    """Settings on a fresh store and an empty Redis; `layers` writes a layers file."""

    def make(layers: list[dict] | None = None, **overrides) -> Settings:
        # As `mapcascade serve` runs: loopback may act as admin when no token is set.
        env: dict = {"redis_url": redis_url, "data_dir": tmp_path / "data", "loopback_admin": True}
        if layers is not None:
            path = tmp_path / "layers.yml"
            path.write_text(yaml.safe_dump({"layers": layers}))
            env["layers_file"] = path
        return Settings(**{**env, **overrides})

    return make


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a worker process needs to see the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPCASCADE_")}
    env.update(
        MAPCASCADE_REDIS_URL=settings.redis_url,
        MAPCASCADE_DATA_DIR=str(settings.data_dir),
        MAPCASCADE_JOB_RETRIES=str(settings.job_retries),
        MAPCASCADE_RETRY_BACKOFF=str(settings.retry_backoff),
        MAPCASCADE_FAILURE_COOLDOWN=str(settings.failure_cooldown),
        # Test workers share two cores with each other and the test process.
        MAPCASCADE_TORCH_THREADS="1",
    )
    if settings.layers_file is not None:
        env["MAPCASCADE_LAYERS_FILE"] = str(settings.layers_file)
    if settings.store is not None:
        env["MAPCASCADE_STORE"] = settings.store
        for name in ("aws_endpoint_url", "aws_region", "aws_access_key_id"):
            if getattr(settings, name) is not None:
                env[name.upper()] = getattr(settings, name)
        if settings.aws_secret_access_key is not None:
            env["AWS_SECRET_ACCESS_KEY"] = settings.aws_secret_access_key.get_secret_value()
    return env


class WorkerProcesses:
    """Real `mapcascade worker` processes; every one started is stopped at teardown."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []

    def start(
        self, settings: Settings, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        env = {**settings_env(settings), **(extra_env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def wait_ready(self, redis: Redis, count: int, timeout: float = 90) -> None:
        from rq import Worker

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(Worker.all(connection=redis)) >= count:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{count} workers did not register within {timeout}s")

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers() -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses()
    yield procs
    procs.stop_all()
