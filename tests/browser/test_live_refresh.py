"""The map pages replace interim tiles with generated ones in place, driven by /events.

A real `mapcascade serve` (embedded Redis, one worker, the tiny random model) on an empty store;
Debian's chromium through Playwright. Each page gets a fresh store so that it sees pending tiles.
"""

from __future__ import annotations

import pytest
from live_service import (
    CHROMIUM,
    CHROMIUM_ARGS,
    assert_block_events_made_all_final,
    assert_pending_tiles_came_back_final,
    record_responses,
    sync_api_or_skip,
    wait_until_all_tiles_final,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# One 640x480 screen at z15 needs the z14 root blocks, then the z15 blocks: seconds with the tiny
# model on an idle machine, minutes on a crowded one. The bounds leave room for the latter.
REFRESH_TIMEOUT = 240.0

sync_api = sync_api_or_skip()

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
def layers() -> list[dict]:
    """This one layer for conftest's `service`, on its empty store."""
    return [LAYER]


@pytest.mark.timeout(REFRESH_TIMEOUT + 180)  # + starting and stopping the service
@pytest.mark.parametrize("page_path", ["/", "/openlayers"])
def test_pending_tiles_are_replaced_without_reload(service: str, page_path: str) -> None:
    page_errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 640, "height": 480})
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            # every tile (PNG) response, in order
            tile_responses = record_responses(
                page, lambda path: path.startswith("/tiles/") and path.endswith(".png")
            )
            navigations: list[str] = []
            page.on(
                "framenavigated",
                lambda f: navigations.append(f.url) if f == page.main_frame else None,
            )
            page.goto(service + page_path)
            # A reload would drop this variable and reset the navigation clock.
            page.evaluate("window.__liveRefreshMarker = 'same page'")
            time_origin = page.evaluate("performance.timeOrigin")
            wait_until_all_tiles_final(page, tile_responses, REFRESH_TIMEOUT)

            # The same document all along.
            assert page.evaluate("window.__liveRefreshMarker") == "same page"
            assert page.evaluate("performance.timeOrigin") == time_origin
            assert len(navigations) == 1, navigations
            assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

            # Every tile first served pending was fetched again, cache-busted, and came back final.
            assert_pending_tiles_came_back_final(tile_responses, only_status=200)
            # The block events drove the refresh, not only the fallback retry.
            assert_block_events_made_all_final(page)
            assert page_errors == []
        finally:
            browser.close()
