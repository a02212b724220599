"""The web-viewer snippets of docs/clients.md work as written: each page, served from another
origin, asks for its layer's tiles inside the layer, shows its attribution, and gets the final
tiles once the interim ones' blocks are announced.

A real `mapcascade serve` (embedded Redis, one worker, the tiny random model) with one layer per
snippet, so that each starts on an empty store; Debian's chromium.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import mercantile
import pytest
import yaml
from live_service import CHROMIUM, ROOT, WEBGL_ARGS, WEBGL_CHECK, serve, sync_api_or_skip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REFRESH_TIMEOUT = 240.0  # seconds for the blocks on screen, on a crowded 2-core machine

sync_api = sync_api_or_skip()

DOC = ROOT / "docs" / "clients.md"
SNIPPETS = {"Leaflet": "leaflet", "OpenLayers": "openlayers", "MapLibre GL": "maplibre"}
BOUNDS = [24.9352, 60.1642, 24.9534, 60.1791]
LAYER = {"imagery": {"type": "world", "area": "helsinki"}, "bounds": BOUNDS, "root_zoom": 14,
         "max_zoom": 15, "model": "tiny"}  # fmt: skip
# The default layer has the short tile URLs; each snippet gets a named layer of its own.
LAYERS = [{"name": "default", **LAYER}] + [
    {"name": name, "title": title, "attribution": f"{name} attribution", **LAYER}
    for title, name in SNIPPETS.items()
]


def snippets() -> dict[str, str]:
    """The ```html block under each `#### <library>` heading of the doc."""
    found = re.findall(r"^#### (.+?)\n.*?^```html\n(.*?)^```", DOC.read_text(), re.M | re.S)
    return dict(found)


def test_the_doc_has_one_snippet_per_library() -> None:
    assert set(snippets()) == set(SNIPPETS)
    for html in snippets().values():
        assert 'const BASE = "http://127.0.0.1:8000";' in html
        assert 'const LAYER = "demo";' in html


# One store for the module (a layer per snippet keeps each empty), instead of conftest's per test.
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("snippets")
    layers = tmp / "layers.yml"
    layers.write_text(yaml.safe_dump({"layers": LAYERS}))
    with serve(tmp / "data", layers) as base:
        yield base


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def other_origin(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static file server on another port (another origin): (base URL, its folder)."""
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.timeout(REFRESH_TIMEOUT + 180)
@pytest.mark.parametrize("library", SNIPPETS)
def test_snippet_shows_the_layer_and_refreshes_interim_tiles(
    service: str, other_origin: tuple[str, Path], library: str
) -> None:
    layer = SNIPPETS[library]
    origin, folder = other_origin
    html = snippets()[library]
    html = html.replace("http://127.0.0.1:8000", service)
    html = html.replace('const LAYER = "demo";', f'const LAYER = "{layer}";')
    (folder / "page.html").write_text(html)

    # (path, HTTP status, X-Tile-Status) of every tile response of the layer, in order
    tiles: list[tuple[str, int, str | None]] = []
    page_errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=WEBGL_ARGS)
        try:
            page = browser.new_page(viewport={"width": 640, "height": 480})
            if library == "MapLibre GL" and not page.evaluate(WEBGL_CHECK):
                pytest.skip("no WebGL in this Chromium, not even SwiftShader: MapLibre cannot run")
            page.on("pageerror", lambda e: page_errors.append(f"{e}\n{e.stack}"))

            def on_response(r: sync_api.Response) -> None:
                path = urlsplit(r.url).path
                if path.startswith(f"/tiles/{layer}/"):
                    tiles.append((path, r.status, r.headers.get("x-tile-status")))

            page.on("response", on_response)
            page.goto(f"{origin}/page.html")
            page.wait_for_function(
                f"document.body.innerText.includes('{layer} attribution')", timeout=30_000
            )

            def still_pending() -> set[str]:
                latest = {p: s for p, status, s in tiles if status == 200}
                return {p for p, s in latest.items() if s == "pending"}

            deadline = time.monotonic() + REFRESH_TIMEOUT
            while not any(s == "pending" for *_, s in tiles):
                assert time.monotonic() < deadline, f"no pending tile was served: {tiles}"
                page.wait_for_timeout(200)
            while still_pending():
                assert time.monotonic() < deadline, (
                    f"tiles still pending after {REFRESH_TIMEOUT:.0f} s: {sorted(still_pending())}"
                )
                page.wait_for_timeout(250)

            # Only tiles of the layer's zooms and bounds were asked for, all answered.
            inside = {
                f"/tiles/{layer}/{t.z}/{t.x}/{t.y}.png" for t in mercantile.tiles(*BOUNDS, [14, 15])
            }
            assert {p for p, *_ in tiles} <= inside
            assert {status for _, status, _ in tiles} == {200}
            assert page_errors == []
        finally:
            browser.close()
