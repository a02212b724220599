"""Both viewers switch layers from the bar and fade the map over the imagery it was drawn from.

A real `mapcascade serve` (embedded Redis, one worker, the tiny random model) with two layers:
the synthetic world and the real Kampala drone tiles of the test fixtures; Debian's chromium.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import mercantile
import pytest
import yaml
from live_service import CHROMIUM, CHROMIUM_ARGS, serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT = 240.0  # seconds for the first real blocks on a crowded 2-core machine

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

KAMPALA = Path(__file__).parents[1] / "fixtures" / "imagery" / "kampala-oam"
B = mercantile.bounds(mercantile.Tile(309606, 261636, 19))
LAYERS = [
    {"name": "demo", "title": "synthetic world", "imagery": {"type": "world", "area": "helsinki"},
     "bounds": [24.9352, 60.1642, 24.9534, 60.1791], "root_zoom": 14, "max_zoom": 15,
     "model": "tiny"},
    {"name": "kampala", "title": "real drone imagery", "attribution": "CC-BY 4.0 test imagery",
     "imagery": {"type": "dir", "path": str(KAMPALA)}, "bounds": [B.west, B.south, B.east, B.north],
     "root_zoom": 19, "max_zoom": 20, "model": "tiny"},
]  # fmt: skip


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    layers = tmp_path / "layers.yml"
    layers.write_text(yaml.safe_dump({"layers": LAYERS}))
    with serve(tmp_path / "data", layers) as base:
        yield base


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
