"""The MapLibre GL page draws the layer from its TileJSON, replaces interim tiles in place as
/events announces their blocks, fades the map over its imagery and switches layers.

A real `mapcascade serve` (embedded Redis, one worker, the tiny random model) on an empty store,
with the synthetic world and the real Kampala drone tiles of the test fixtures (the `service` of
conftest.py); Debian's chromium with software WebGL (SwiftShader). The page's pixels are read back
from screenshots.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import mercantile
import numpy as np
import pytest
from live_service import (
    CHROMIUM,
    DEMO_AND_KAMPALA_LAYERS,
    WEBGL_ARGS,
    WEBGL_CHECK,
    assert_block_events_made_all_final,
    assert_pending_tiles_came_back_final,
    record_responses,
    sync_api_or_skip,
    tiles_among,
    wait_until_all_tiles_final,
)
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REFRESH_TIMEOUT = 240.0  # seconds for the blocks on screen, on a crowded 2-core machine

sync_api = sync_api_or_skip()

BACKGROUND = (0xDD, 0xDD, 0xDD)  # #map's background, where nothing is drawn


def settle(page: sync_api.Page) -> None:
    """Until MapLibre has drawn every tile it loads (its `idle` event after a new frame)."""
    page.evaluate(
        "new Promise((resolve, reject) => {"
        " setTimeout(() => reject(new Error('map not idle after 30 s')), 30000);"
        " mapcascadeViewer.map.once('idle', resolve); mapcascadeViewer.map.triggerRepaint(); })"
    )


def middle(page: sync_api.Page) -> np.ndarray:
    """RGB pixels of the middle of the map (inside the layer), from a screenshot."""
    png = page.locator("#map").screenshot()
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    h, w, _ = image.shape
    return image[h // 2 - 80 : h // 2 + 80, w // 2 - 80 : w // 2 + 80]


def set_opacity(page: sync_api.Page, percent: int) -> np.ndarray:
    page.fill("#opacity", str(percent))
    settle(page)
    assert page.evaluate("mapcascadeViewer.mapOpacity()") == pytest.approx(percent / 100)
    return middle(page)


@pytest.mark.timeout(REFRESH_TIMEOUT + 180)  # + starting and stopping the service
def test_maplibre_page_refreshes_pending_tiles_compares_and_switches_layer(
    service: str, tmp_path: Path
) -> None:
    page_errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=WEBGL_ARGS)
        try:
            page = browser.new_page(viewport={"width": 640, "height": 480})
            if not page.evaluate(WEBGL_CHECK):
                pytest.skip("no WebGL in this Chromium, not even SwiftShader: MapLibre cannot run")
            page.on("pageerror", lambda e: page_errors.append(f"{e}\n{e.stack}"))
            # every tile and imagery response, in order
            responses = record_responses(
                page, lambda path: path.startswith(("/tiles/", "/imagery/"))
            )
            page.goto(service + "/maplibre")
            page.evaluate("window.__liveRefreshMarker = 'same page'")
            page.wait_for_function("window.mapcascadeViewer !== undefined")
            assert page.title() == "synthetic world · MapLibre GL"

            # The store is empty: the tiles on screen are served pending, then announced final.
            wait_until_all_tiles_final(page, responses, REFRESH_TIMEOUT)
            assert page.evaluate("window.__liveRefreshMarker") == "same page"

            # Tiles of the TileJSON's template, zoom and bounds only: the page opens at its
            # center zoom (15), where the layer's tiles show at their own size.
            demo = mercantile.tiles(*DEMO_AND_KAMPALA_LAYERS[0]["bounds"], zooms=[15])
            allowed = {f"/tiles/15/{t.x}/{t.y}.png" for t in demo}
            assert {p for p, *_ in tiles_among(responses)} <= allowed
            assert_pending_tiles_came_back_final(responses)
            assert_block_events_made_all_final(page)
            # The imagery under the tiles came back once their blocks were announced.
            imagery = [(p, s) for p, _, s, _ in responses if p.startswith("/imagery/demo/15/")]
            assert any(s == 404 for _, s in imagery) and any(s == 200 for _, s in imagery)

            # The map is drawn, and the slider fades it over the imagery: at 30 % the pixels
            # are the blend of the map alone and the imagery alone.
            settle(page)
            page.screenshot(path=tmp_path / "maplibre.png")
            assert page.evaluate("mapcascadeViewer.mapOpacity()") == 1
            full = middle(page)
            assert full.std() > 10 and np.abs(full - BACKGROUND).mean() > 10
            bare = set_opacity(page, 0)
            page.screenshot(path=tmp_path / "maplibre-imagery.png")
            assert bare.std() > 10 and np.abs(bare - BACKGROUND).mean() > 10
            assert np.abs(full - bare).mean() > 10
            blend = set_opacity(page, 30)
            assert np.abs(blend - (0.3 * full + 0.7 * bare)).mean() < 3
            attribution = page.inner_text(".maplibregl-ctrl-attrib")
            assert "demo attribution" in attribution

            # The switcher opens the same viewer on the other layer, drawn from its TileJSON.
            page.wait_for_function("document.querySelectorAll('#layer option').length == 2")
            before = len(responses)
            with page.expect_navigation():
                page.select_option("#layer", "kampala")
            assert urlsplit(page.url).path == "/maplibre"
            assert parse_qs(urlsplit(page.url).query) == {"layer": ["kampala"]}
            page.wait_for_function("window.mapcascadeViewer !== undefined")
            # The switcher is filled from /layers after the viewer starts.
            page.wait_for_function("document.querySelectorAll('#layer option').length == 2")
            assert page.eval_on_selector("#layer", "s => s.value") == "kampala"
            page.wait_for_function(
                "document.querySelector('.maplibregl-ctrl-attrib')"
                ".innerText.includes('CC-BY 4.0 test imagery')"
            )
            deadline = time.monotonic() + 30
            while not any(p.startswith("/tiles/kampala/20/") for p, *_ in responses[before:]):
                assert time.monotonic() < deadline, responses[before:]
                page.wait_for_timeout(250)
            assert not any(p.startswith("/tiles/15/") for p, *_ in responses[before:])

            # A layer that is not there (unknown, oversize, a path): the page says so.
            for layer in ("nope", "x" * 3000, "../tiles.json?"):
                page.goto(f"{service}/maplibre?{urlencode({'layer': layer})}")
                page.wait_for_selector("#status.error")
                assert page.inner_text("#status").startswith("Cannot load tiles.json: GET /")
                assert page.inner_text("#status").endswith("-> 404")
            assert page_errors == []
        finally:
            browser.close()

        # Without WebGL the page says so and points to the other viewers.
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=[*WEBGL_ARGS, "--disable-webgl"]
        )
        try:
            page = browser.new_page()
            assert not page.evaluate(WEBGL_CHECK)
            page.goto(service + "/maplibre")
            page.wait_for_selector("#status.error")
            assert page.inner_text("#status").startswith("MapLibre GL needs WebGL")
        finally:
            browser.close()
