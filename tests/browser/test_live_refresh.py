"""The map pages replace interim tiles with generated ones in place, driven by /events.

A real `mapcascade serve` (embedded Redis, one worker, the tiny random model) on an empty store;
Debian's chromium through Playwright. Each page gets a fresh store so that it sees pending tiles.
"""

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
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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
# Generating z14 -> z15 -> z16 for one screen with the tiny model takes seconds; the bound
# leaves room for a busy CI machine.
REFRESH_TIMEOUT = 150.0

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

LAYER = {
    "name": "demo",
    "title": "browser test layer",
    "attribution": "test attribution",
    "imagery": {"type": "world", "area": "helsinki"},
    "bounds": [24.9352, 60.1642, 24.9534, 60.1791],
    "root_zoom": 14,
    "max_zoom": 16,
    "model": "tiny",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """`mapcascade serve` on an empty store; its whole process group is stopped afterwards."""
    layers = tmp_path / "layers.yml"
    layers.write_text(yaml.safe_dump({"layers": [LAYER]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPCASCADE_")}
    env["MAPCASCADE_LAYERS_FILE"] = str(layers)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port),
         "--data-dir", str(tmp_path / "data")],
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"mapcascade serve exited with {proc.returncode}"
            assert time.monotonic() < deadline, "mapcascade serve never became ready"
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield base
    finally:
        stop_group(proc)


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


@pytest.mark.parametrize("page_path", ["/", "/openlayers"])
def test_pending_tiles_are_replaced_without_reload(service: str, page_path: str) -> None:
    # (path, query, HTTP status, X-Tile-Status) of every tile response, in order
    tile_responses: list[tuple[str, dict, int, str | None]] = []
    page_errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            page.on("pageerror", lambda e: page_errors.append(str(e)))

            def on_response(r: sync_api.Response) -> None:
                u = urlsplit(r.url)
                if u.path.startswith("/tiles/") and u.path.endswith(".png"):
                    tile_responses.append(
                        (u.path, parse_qs(u.query), r.status, r.headers.get("x-tile-status"))
                    )

            page.on("response", on_response)
            navigations: list[str] = []
            page.on(
                "framenavigated",
                lambda f: navigations.append(f.url) if f == page.main_frame else None,
            )
            page.goto(service + page_path)
            # A reload would drop this variable and reset the navigation clock.
            page.evaluate("window.__liveRefreshMarker = 'same page'")
            time_origin = page.evaluate("performance.timeOrigin")

            def pending_paths() -> set[str]:
                return {p for p, _, _, s in tile_responses if s == "pending"}

            def still_pending() -> set[str]:
                latest: dict[str, str | None] = {}
                for path, _, status, tile_status in tile_responses:
                    if status == 200:
                        latest[path] = tile_status
                return {p for p, s in latest.items() if s == "pending"}

            deadline = time.monotonic() + REFRESH_TIMEOUT
            while not pending_paths():
                assert time.monotonic() < deadline, f"no pending tile was served: {tile_responses}"
                page.wait_for_timeout(200)
            while still_pending() or page.inner_text("#status").split(" · ")[0] != (
                "all tiles final"
            ):
                assert time.monotonic() < deadline, (
                    f"tiles still pending after {REFRESH_TIMEOUT:.0f} s: "
                    f"{sorted(still_pending())}; status line {page.inner_text('#status')!r}"
                )
                page.wait_for_timeout(250)

            # The same document all along.
            assert page.evaluate("window.__liveRefreshMarker") == "same page"
            assert page.evaluate("performance.timeOrigin") == time_origin
            assert len(navigations) == 1, navigations
            assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

            # Every tile first served pending was fetched again, cache-busted, and came back final.
            for path in pending_paths():
                refetches = [
                    (q, status, s)
                    for p, q, status, s in tile_responses
                    if p == path and "v" in q and status == 200
                ]
                assert refetches, f"{path} was never fetched again"
                assert refetches[-1][2] == "final", (path, refetches)

            viewer = page.evaluate(
                "({stats: mapcascadeViewer.stats,"
                " states: Array.from(mapcascadeViewer.states.states.values())})"
            )
            # The block events drove the refresh, not only the fallback retry.
            assert viewer["stats"]["events"] >= 1, viewer["stats"]
            assert viewer["stats"]["eventReloads"] >= 1, viewer["stats"]
            assert viewer["states"] and set(viewer["states"]) == {"final"}, viewer["states"]
            assert page_errors == []
        finally:
            browser.close()
