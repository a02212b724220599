"""`mapcascade serve` as a user runs it: one command up, tiles generated, Ctrl-C leaves nothing."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from app.embedded import SOCKET_DIR_PREFIX
from tests.browser.live_service import free_port, wait_ready
from tests.conftest import KAMPALA_LAYER, ROOT

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


def socket_dirs(pids: set[int]) -> set[Path]:
    """The embedded Redis socket folders these processes name on their command lines (redis
    retitles itself `redis-server unixsocket:/tmp/mapcascade-redis-.../redis.sock`): this serve's
    own, as other test runs on the machine make and remove theirs meanwhile."""
    pattern = re.compile(rf"(/\S*?{re.escape(SOCKET_DIR_PREFIX)}[^/\s]+)")
    found = set()
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found |= {Path(m) for m in pattern.findall(cmdline)}
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "docker-stop"]
)
def serve_env(tmp_path: Path, layers: list[dict]) -> dict[str, str]:
    path = tmp_path / "layers.yml"
    path.write_text(yaml.safe_dump({"layers": layers}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPCASCADE_")}
    env["MAPCASCADE_LAYERS_FILE"] = str(path)
    env["MAPCASCADE_TORCH_THREADS"] = "1"  # the test process shares the two cores
    return env


def start_serve(env: dict[str, str], port: int, data: Path, log: Path | None = None):
    out = log.open("a") if log else None
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--data-dir", str(data)],
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
    )


@pytest.mark.parametrize(
    "stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "docker-stop"]
)
def test_serve_runs_everything_and_a_signal_stops_it(tmp_path, stop_signal):
    env = serve_env(tmp_path, [KAMPALA_LAYER])
    port = free_port()
    data = tmp_path / "data"
    proc = start_serve(env, port, data)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        assert httpx.get(f"{base}/tiles.json").json()["tilejson"] == "3.0.0"
        r = httpx.get(f"{base}/tiles/19/309606/261636.png?wait=60", timeout=90)
        assert r.status_code == 200 and r.headers["x-tile-status"] == "final"
        assert Image.open(io.BytesIO(r.content)).size == (256, 256)
        again = httpx.get(f"{base}/tiles/19/309606/261636.png")
        assert again.headers["x-cache"] == "HIT" and again.content == r.content
        children = descendants(proc.pid)
        assert len(children) >= 2  # redis-server and the worker (with its scheduler)
        own_socket_dirs = socket_dirs(children)
        assert own_socket_dirs and all(d.is_dir() for d in own_socket_dirs)
        # A second serve on the same data folder is refused, and says why.
        second = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port()),
             "--data-dir", str(data)],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode != 0 and "in use by another embedded Redis" in second.stderr
    finally:
        proc.send_signal(stop_signal)
        proc.wait(timeout=60)
    time.sleep(0.5)
    assert proc.returncode == 0
    assert not [pid for pid in children if alive(pid)], "processes left behind"
    assert not list(data.rglob("*.pid")) and not list(data.rglob(".tmp-*"))
    left = [d for d in own_socket_dirs if d.exists()]
    assert not left, f"the embedded Redis left its socket folder {left}"


# 89 blocks over z19-21 around the Kampala fixture tile (most of them no-data: fast).
CRASH_AREA = [32.5890, 0.3470, 32.5915, 0.3495]
CRASH_LAYER = {**KAMPALA_LAYER, "bounds": CRASH_AREA, "max_zoom": 21}


def test_sigkill_of_serve_leaves_no_orphan_and_a_restart_generates_every_queued_block_once(
    tmp_path,
):
    env = serve_env(tmp_path, [CRASH_LAYER])
    port, data, log = free_port(), tmp_path / "data", tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    body = {"layer": "kampala", "bbox": CRASH_AREA, "minzoom": 19, "maxzoom": 21}
    proc = start_serve(env, port, data, log)
    try:
        wait_ready(base, proc)
        seed = httpx.post(f"{base}/seed", json=body, timeout=10).json()
        deadline = time.monotonic() + 30
        while not httpx.get(f"{base}/seed/{seed['id']}").json()["enqueued"]:
            assert time.monotonic() < deadline, "the seed was never enqueued"
            time.sleep(0.05)
        children = descendants(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as the OOM killer might
        proc.wait()
    stored_at_kill = len(list((data / "tiles" / "kampala").rglob("*.json")))
    assert seed["blocks"] - stored_at_kill >= 50, "too few blocks were still queued"
    deadline = time.monotonic() + 10
    while [pid for pid in children if alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)], "orphans outlived serve"

    started = time.monotonic()
    proc = start_serve(env, port, data, log)
    try:
        wait_ready(base, proc)
        deadline = time.monotonic() + 180
        while (status := httpx.get(f"{base}/seed/{seed['id']}").json())["status"] not in (
            "done",
            "failed",
            "cancelled",
        ):
            assert time.monotonic() < deadline, f"the seed never finished: {status}"
            time.sleep(0.5)
        finished = time.monotonic() - started
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert status["status"] == "done" and status["blocks"]["failed"] == 0, status
    assert status["blocks"]["done"] == seed["blocks"]
    generated = re.findall(r"block (\S+) generated in", log.read_text())
    assert len(generated) == len(set(generated)) == seed["blocks"], "a block ran twice or never"
    # A stale lock of the killed worker would hold its block for the job timeout (15 min).
    assert finished < 150
