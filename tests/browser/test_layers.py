"""Both viewers switch layers from the bar and fade the map over the imagery it was drawn from.

A real `mapcascade serve` (embedded Redis, one worker, the tiny random model) with two layers:
the synthetic world and the real Kampala drone tiles of the test fixtures (the `service` of
conftest.py); Debian's chromium.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from live_service import CHROMIUM, CHROMIUM_ARGS, sync_api_or_skip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT = 240.0  # seconds for the first real blocks on a crowded 2-core machine

sync_api = sync_api_or_skip()


@pytest.mark.timeout(TIMEOUT + 180)
@pytest.mark.parametrize("page_path", ["/", "/openlayers"])
def test_switch_to_the_real_layer_and_compare_map_with_imagery(
    service: str, page_path: str
) -> None:
    responses: list[tuple[str, int]] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 640, "height": 480})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: responses.append((urlsplit(r.url).path, r.status)))
            page.goto(service + page_path)
            page.wait_for_function("document.querySelectorAll('#layer option').length == 2")
            assert page.eval_on_selector("#layer", "s => s.value") == "demo"

            # The switcher opens the same viewer on the other layer.
            with page.expect_navigation():
                page.select_option("#layer", "kampala")
            assert parse_qs(urlsplit(page.url).query) == {"layer": ["kampala"]}
            assert urlsplit(page.url).path == page_path
            page.wait_for_function("window.mapcascadeViewer !== undefined")
            # The switcher is filled from /layers after the viewer starts.
            page.wait_for_function("document.querySelectorAll('#layer option').length == 2")
            assert page.eval_on_selector("#layer", "s => s.value") == "kampala"

            # Its map tiles become final, and the imagery they were drawn from appears under
            # them (the imagery layer refreshes on block events).
            deadline = time.monotonic() + TIMEOUT
            while not any(p.startswith("/imagery/kampala/") and s == 200 for p, s in responses):
                assert time.monotonic() < deadline, sorted(set(responses))
                page.wait_for_timeout(250)
            assert any(p.startswith("/tiles/kampala/") for p, _ in responses)
            assert not any(p.startswith("/tiles/demo/") for p, _ in responses[-50:])

            # The slider fades the map over the imagery.
            assert page.evaluate("mapcascadeViewer.mapOpacity()") == 1
            page.fill("#opacity", "30")
            assert page.evaluate("mapcascadeViewer.mapOpacity()") == pytest.approx(0.3)
            page.fill("#opacity", "0")
            assert page.evaluate("mapcascadeViewer.mapOpacity()") == 0
            assert errors == []
        finally:
            browser.close()
