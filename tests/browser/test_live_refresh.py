"""The map pages replace interim tiles with generated ones in place, driven by /events.

A real `mapcascade serve` (embedded Redis, one worker, the tiny random model) on an empty store;
Debian's chromium through Playwright. Each page gets a fresh store so that it sees pending tiles.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from live_service import CHROMIUM, CHROMIUM_ARGS, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# One 640x480 screen at z15 needs the z14 root blocks, then the z15 blocks: seconds with the tiny
# model on an idle machine, minutes on a crowded one. The bounds leave room for the latter.
REFRESH_TIMEOUT = 240.0

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
    "max_zoom": 15,  # the page opens at min(root + 2, max) = 15
    "model": "tiny",
}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """`mapcascade serve` on an empty store; its whole process group is stopped afterwards."""
    layers = tmp_path / "layers.yml"
    layers.write_text(yaml.safe_dump({"layers": [LAYER]}))
    with serve(tmp_path / "data", layers) as base:
        yield base


@pytest.mark.timeout(REFRESH_TIMEOUT + 180)  # + starting and stopping the service
@pytest.mark.parametrize("page_path", ["/", "/openlayers"])
def test_pending_tiles_are_replaced_without_reload(service: str, page_path: str) -> None:
    # (path, query, HTTP status, X-Tile-Status) of every tile response, in order
    tile_responses: list[tuple[str, dict, int, str | None]] = []
    page_errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 640, "height": 480})
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
