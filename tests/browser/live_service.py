"""Helpers for the browser tests and the README screenshot: a real `mapcascade serve` on a
free loopback port, and Debian's chromium for Playwright."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# MapLibre GL draws with WebGL: with no GPU, Chromium's software WebGL (SwiftShader through ANGLE),
# which recent Chromium enables only when asked.
WEBGL_ARGS = [
    *(a for a in CHROMIUM_ARGS if a != "--disable-gpu"),
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
WEBGL_CHECK = (
    "(() => { const c = document.createElement('canvas');"
    " return !!(c.getContext('webgl2') || c.getContext('webgl')); })()"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(data_dir: Path, layers_file: Path | None = None, timeout: float = 120) -> Iterator[str]:
    """`mapcascade serve` until /ready answers 200; yields its base URL, then stops its group."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPCASCADE_")}
    if layers_file is not None:
        env["MAPCASCADE_LAYERS_FILE"] = str(layers_file)
    env["MAPCASCADE_TORCH_THREADS"] = "1"  # the worker shares two cores with Chromium
    # Misses answer at once with the interim tile: however fast the model, tiles start pending.
    env["MAPCASCADE_WAIT_DEFAULT"] = "0"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port),
         "--data-dir", str(data_dir)],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout)
        yield base
    finally:
        stop_group(proc)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until `mapcascade serve` at `base` answers /ready with 200 (a worker is up)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mapcascade serve exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"mapcascade serve not ready after {timeout:.0f} s")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)


def stop_group(proc: subprocess.Popen) -> None:
    # SIGINT to the group is what a terminal's Ctrl-C sends; SIGKILL if that is not enough.
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the group
