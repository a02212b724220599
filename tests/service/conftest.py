"""Service fixtures: the app of a module's `settings` (client, store), and `mapcascade api` as
deployed on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.store import FileTileStore
from tests.browser.live_service import free_port
from tests.conftest import settings_env
from tests.service.test_seed import SEED_LAYER


@pytest.fixture
def live_api(make_settings) -> Iterator[str]:
    """`mapcascade api` as deployed (no token, no trusted proxy) on a free loopback port."""
    settings = make_settings([SEED_LAYER])
    env = settings_env(settings)  # loopback_admin is not passed on: the api never has it
    env["MAPCASCADE_WAIT_MAX"] = "0.2"  # no worker runs: a miss would wait 3 s for nothing
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "api", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "api did not start"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# Modules define `settings`; these serve it through the ASGI app and read its store.
@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def store(settings) -> FileTileStore:
    return FileTileStore(settings.tiles_dir)
