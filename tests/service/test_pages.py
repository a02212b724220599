"""The three viewer pages: served at their routes, with every file they load, linked to each
other, and relative URLs only (so they work behind a proxy prefix)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import KAMPALA_LAYER

STATIC = Path(__file__).parents[2] / "static"
PAGES = {"/": "leaflet", "/openlayers": "ol", "/maplibre": "maplibre-gl"}


class Refs(HTMLParser):
    """The scripts, stylesheets and links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        elif tag == "link" and a.get("rel") == "stylesheet":
            self.styles.append(a["href"])
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])


@pytest.fixture
def client(make_settings):
    with TestClient(create_app(make_settings([KAMPALA_LAYER]))) as c:
        yield c


def refs(client: TestClient, path: str) -> Refs:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    parser = Refs()
    parser.feed(r.text)
    return parser


@pytest.mark.parametrize(("path", "library"), PAGES.items())
def test_each_page_loads_its_vendored_library_and_the_shared_script(client, path, library):
    page = refs(client, path)
    assert f"static/vendor/{library}/{library}.js" in page.scripts
    assert f"static/vendor/{library}/{library}.css" in page.styles
    # The shared script comes before the page's own.
    assert page.scripts.index("static/js/mapcascade.js") < len(page.scripts) - 1
    for url in page.scripts + page.styles:
        assert not url.startswith(("/", "http:", "https:")), url  # relative: proxy prefixes work
        r = client.get("/" + url)
        assert r.status_code == 200, url
        kind = "javascript" if url.endswith(".js") else "css"
        assert kind in r.headers["content-type"], (url, r.headers["content-type"])
        assert b"sourceMappingURL" not in r.content[-300:], url  # maps are not vendored


@pytest.mark.parametrize("path", PAGES)
def test_each_page_links_to_the_other_two(client, path):
    # Link targets relative to the page's own URL at the root.
    targets = {"./": "/", "openlayers": "/openlayers", "maplibre": "/maplibre"}
    linked = {targets[href] for href in refs(client, path).links}
    assert linked == set(PAGES) - {path}
    for href in refs(client, path).links:
        assert client.get("/" + href.removeprefix("./")).status_code == 200


def test_vendored_versions_match_the_vendor_table():
    table = (STATIC / "vendor" / "README.md").read_text()
    banner = (STATIC / "vendor" / "maplibre-gl" / "maplibre-gl.js").read_text()[:300]
    version = re.search(r"maplibre-gl-js/blob/v([\d.]+)/", banner)
    assert version, banner
    assert re.search(rf"\| \[MapLibre GL JS\].*\| {re.escape(version[1])} \|", table)
    assert (STATIC / "vendor" / "maplibre-gl" / "LICENSE.txt").read_text().startswith("Copyright")


@pytest.mark.parametrize("path", ["/maplibre/x", "/maplibre.html", "/maplibre" + "e" * 5000])
def test_near_misses_of_the_page_route_are_json_404s(client, path):
    r = client.get(path)
    assert r.status_code == 404 and r.json()["status"] == 404


def test_a_trailing_slash_redirects_to_the_page(client):
    # Under /maplibre/ the page's relative URLs would resolve one level down and miss.
    r = client.get("/maplibre/", follow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/maplibre")


@pytest.mark.parametrize("path", PAGES)
def test_a_page_is_the_same_whatever_the_query(client, path):
    # The pages are rendered once from one template; no request value reaches them.
    assert client.get(path, params={"page": "<script>x</script>"}).text == client.get(path).text
    assert "$" not in client.get(path).text  # every template field filled
