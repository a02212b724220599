"""Helpers for the browser tests and the README screenshot: a real `mapcascade serve` on a
free loopback port, Debian's chromium for Playwright, the layers the viewer tests switch between
and the tile responses a page gets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import mercantile
import pytest

if TYPE_CHECKING:  # playwright may be missing: the tests then skip, see sync_api_or_skip
    from playwright.sync_api import Page, Response

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

KAMPALA = ROOT / "tests" / "fixtures" / "imagery" / "kampala-oam"
KAMPALA_BOUNDS = list(mercantile.bounds(mercantile.Tile(309606, 261636, 19)))  # of its z19 tile
# The synthetic world (the default layer) and the real Kampala drone tiles of the test fixtures;
# each has an attribution, which the MapLibre test looks for.
DEMO_AND_KAMPALA_LAYERS = [
    {"name": "demo", "title": "synthetic world", "attribution": "demo attribution",
     "imagery": {"type": "world", "area": "helsinki"},
     "bounds": [24.9352, 60.1642, 24.9534, 60.1791], "root_zoom": 14, "max_zoom": 15,
     "model": "tiny"},
    {"name": "kampala", "title": "real drone imagery", "attribution": "CC-BY 4.0 test imagery",
     "imagery": {"type": "dir", "path": str(KAMPALA)}, "bounds": KAMPALA_BOUNDS,
     "root_zoom": 19, "max_zoom": 20, "model": "tiny"},
]  # fmt: skip

# (path, query, HTTP status, X-Tile-Status) of one response a page got
RecordedResponse = tuple[str, dict[str, list[str]], int, str | None]


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


def sync_api_or_skip() -> ModuleType:
    """Playwright's sync API; at a test module's top level, skips the module where Debian's
    chromium or the playwright package is missing."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="needs the playwright package")


def record_responses(page: Page, wanted: Callable[[str], bool]) -> list[RecordedResponse]:
    """A list that gets every response to a `wanted` path the page gets from now on, in order."""
    responses: list[RecordedResponse] = []

    def on_response(r: Response) -> None:
        u = urlsplit(r.url)
        if wanted(u.path):
            responses.append((u.path, parse_qs(u.query), r.status, r.headers.get("x-tile-status")))

    page.on("response", on_response)
    return responses


def tiles_among(responses: list[RecordedResponse]) -> list[RecordedResponse]:
    return [r for r in responses if r[0].startswith("/tiles/")]


def pending_paths(responses: list[RecordedResponse]) -> set[str]:
    """The tiles that were served pending at least once."""
    return {p for p, _, _, s in tiles_among(responses) if s == "pending"}


def still_pending(responses: list[RecordedResponse]) -> set[str]:
    """The tiles whose latest answer (200) said pending."""
    latest = {p: s for p, _, status, s in tiles_among(responses) if status == 200}
    return {p for p, s in latest.items() if s == "pending"}


def wait_until_all_tiles_final(
    page: Page, responses: list[RecordedResponse], timeout: float
) -> None:
    """Until a tile has been served pending (the store starts empty), then none is pending any
    more and the viewer's status line says so; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pending_paths(responses):
        assert time.monotonic() < deadline, f"no pending tile was served: {responses}"
        page.wait_for_timeout(200)
    while still_pending(responses) or page.inner_text("#status").split(" · ")[0] != (
        "all tiles final"
    ):
        assert time.monotonic() < deadline, (
            f"tiles still pending after {timeout:.0f} s: "
            f"{sorted(still_pending(responses))}; status line {page.inner_text('#status')!r}"
        )
        page.wait_for_timeout(250)


def assert_pending_tiles_came_back_final(
    responses: list[RecordedResponse], only_status: int | None = None
) -> None:
    """Every tile first served pending was fetched again, cache-busted (`?v=`), and its last such
    fetch came back final; where `only_status` is given, only fetches answered with it count."""
    for path in pending_paths(responses):
        refetches = [
            (q, status, s)
            for p, q, status, s in tiles_among(responses)
            if p == path and "v" in q and (only_status is None or status == only_status)
        ]
        assert refetches, f"{path} was never fetched again"
        assert refetches[-1][2] == "final", (path, refetches)


def assert_block_events_made_all_final(page: Page) -> None:
    """The viewer got block events and reloaded tiles for them (not only by its fallback retry),
    and every tile it tracks is final."""
    viewer = page.evaluate(
        "({stats: mapcascadeViewer.stats,"
        " states: Array.from(mapcascadeViewer.states.states.values())})"
    )
    assert viewer["stats"]["events"] >= 1, viewer["stats"]
    assert viewer["stats"]["eventReloads"] >= 1, viewer["stats"]
    assert viewer["states"] and set(viewer["states"]) == {"final"}, viewer["states"]
