"""`mapcascade serve` as a user runs it: one command up, tiles generated, Ctrl-C leaves nothing."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from tests.conftest import KAMPALA_LAYER, ROOT
from tests.service.test_events import free_port

pytestmark = pytest.mark.slow


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children in their own sessions included)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def redis_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("mapcascade-redis-*"))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "docker-stop"]
)
def test_serve_runs_everything_and_a_signal_stops_it(tmp_path, stop_signal):
    layers = tmp_path / "layers.yml"
    layers.write_text(yaml.safe_dump({"layers": [KAMPALA_LAYER]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPCASCADE_")}
    env["MAPCASCADE_LAYERS_FILE"] = str(layers)
    env["MAPCASCADE_TORCH_THREADS"] = "1"  # the test process shares the two cores
    port = free_port()
    data = tmp_path / "data"
    redis_dirs_before = redis_dirs()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--data-dir", str(data)],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{base}/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, "service never became ready"
        assert httpx.get(f"{base}/tiles.json").json()["tilejson"] == "3.0.0"
        r = httpx.get(f"{base}/tiles/19/309606/261636.png?wait=60", timeout=90)
        assert r.status_code == 200 and r.headers["x-tile-status"] == "final"
        assert Image.open(io.BytesIO(r.content)).size == (256, 256)
        again = httpx.get(f"{base}/tiles/19/309606/261636.png")
        assert again.headers["x-cache"] == "HIT" and again.content == r.content
        children = descendants(proc.pid)
        assert len(children) >= 2  # redis-server and the worker (with its scheduler)
    finally:
        proc.send_signal(stop_signal)
        proc.wait(timeout=60)
    time.sleep(0.5)
    assert proc.returncode == 0
    assert not [pid for pid in children if alive(pid)], "processes left behind"
    assert not list(data.rglob("*.pid")) and not list(data.rglob(".tmp-*"))
    assert redis_dirs() <= redis_dirs_before, "the embedded Redis left its socket folder"
