"""WMTS 1.0.0 tiles through the ASGI app on a real Redis and file store: RESTful and KVP
GetTile answering what /tiles answers, and OWS ExceptionReport errors. The capabilities
document: test_wmts_capabilities.py."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.tiles import Block, Tile
from app.wmts import OWS_NS, WMTS_NS
from tests.conftest import KAMPALA_LAYER

NS = {"wmts": WMTS_NS, "ows": OWS_NS, "xlink": "http://www.w3.org/1999/xlink"}
# A second layer over the same area with other zooms: it gets its own tile matrix set.
COARSE = {**KAMPALA_LAYER, "name": "coarse", "title": "Coarse & <escaped>", "root_zoom": 17,
          "max_zoom": 19}  # fmt: skip
TILE = Tile(309606, 261636, 19)
SET = "GoogleMapsCompatible-19-22"
REST = f"/wmts/1.0.0/kampala/default/{SET}/19/{TILE.y}/{TILE.x}.png"
KVP = (
    "/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=kampala&STYLE=default&FORMAT=image/png"
    f"&TILEMATRIXSET={SET}&TILEMATRIX=19&TILEROW={TILE.y}&TILECOL={TILE.x}"
)
XYZ = f"/tiles/kampala/19/{TILE.x}/{TILE.y}.png"
SAME_HEADERS = ("content-type", "etag", "last-modified", "cache-control", "x-cache",
                "x-tile-status", "content-length")  # fmt: skip


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def settings(make_settings):
    return make_settings([KAMPALA_LAYER, COARSE], wait_default=0.0, max_outstanding_per_client=2)


def capabilities(client: TestClient, url: str = "/wmts/1.0.0/WMTSCapabilities.xml", **kw):
    r = client.get(url, **kw)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    return ET.fromstring(r.content)


def layer_element(root: ET.Element, name: str) -> ET.Element:
    for layer in root.findall("wmts:Contents/wmts:Layer", NS):
        if layer.findtext("ows:Identifier", namespaces=NS) == name:
            return layer
    raise AssertionError(f"no layer {name}")


def exception(r) -> tuple[str, str | None, str]:
    assert r.headers["content-type"].startswith("application/xml"), r.text
    assert r.headers["cache-control"] == "no-store"
    root = ET.fromstring(r.content)
    assert root.tag == f"{{{OWS_NS}}}ExceptionReport" and root.get("version") == "1.1.0"
    e = root.find("ows:Exception", NS)
    return e.get("exceptionCode"), e.get("locator"), e.findtext("ows:ExceptionText", namespaces=NS)


def test_rest_and_kvp_answer_the_tile_routes_bytes_and_headers(client, store):
    store.put_block(Block.of("kampala", TILE), [png("red"), png("green"), png("blue"),
                                               png("white")], {})  # fmt: skip
    xyz = client.get(XYZ)
    assert xyz.content == png("red")
    # Parameter names in any case; values as advertised.
    lower = "&".join(f"{k.lower()}={v}" for k, v in (p.split("=") for p in KVP.split("&")))
    for url in (REST, KVP, lower):
        r = client.get(url, headers={"Origin": "https://gis.example.org"})
        assert r.status_code == 200 and r.content == xyz.content
        assert {h: r.headers.get(h) for h in SAME_HEADERS} == {
            h: xyz.headers.get(h) for h in SAME_HEADERS
        }
        assert r.headers["access-control-allow-origin"] == "*"
        assert "X-Cache" in r.headers["access-control-expose-headers"]
        again = client.get(url, headers={"If-None-Match": xyz.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(xyz.content))
    # TileCol is x, TileRow is y: the neighbours of the block come back in their places.
    right = REST.replace(f"/{TILE.x}.png", f"/{TILE.x + 1}.png")
    below = KVP.replace(f"TILEROW={TILE.y}", f"TILEROW={TILE.y + 1}")
    assert client.get(right).content == png("green") and client.get(below).content == png("blue")


def test_missing_tile_answers_the_same_interim_tile(client, store):
    # The parent is stored: the z20 child answers its upsampled quadrant, pending.
    store.put_block(Block.of("kampala", TILE), [png("red")] * 4, {})
    child = Tile(2 * TILE.x, 2 * TILE.y, 20)
    xyz = client.get(f"/tiles/kampala/20/{child.x}/{child.y}.png")
    kvp = client.get(KVP.replace("TILEMATRIX=19", "TILEMATRIX=20")
                     .replace(f"TILEROW={TILE.y}", f"TILEROW={child.y}")
                     .replace(f"TILECOL={TILE.x}", f"TILECOL={child.x}"))  # fmt: skip
    rest = client.get(f"/wmts/1.0.0/kampala/default/{SET}/20/{child.y}/{child.x}.png?wait=0")
    for r in (kvp, rest):
        assert r.status_code == 200 and r.content == xyz.content
        assert r.headers["x-tile-status"] == "pending" and r.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(rest.content)).convert("RGB").getpixel((9, 9)) == (255, 0, 0)


def test_rate_limit_and_retry_after_come_through_as_exception_reports(client, store):
    store.put_block(Block.of("kampala", TILE), [png("red")] * 4, {})
    for x, y in ((619212, 523272), (619214, 523272)):  # two z20 blocks queued: the limit
        assert client.get(f"/wmts/1.0.0/kampala/default/{SET}/20/{y}/{x}.png").status_code == 200
    r = client.get(KVP.replace("TILEMATRIX=19", "TILEMATRIX=20")
                   .replace(f"TILEROW={TILE.y}", "TILEROW=523274")
                   .replace(f"TILECOL={TILE.x}", "TILECOL=619212"))  # fmt: skip
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    code, _, text = exception(r)
    assert code == "NoApplicableCode" and "too many tiles being generated" in text


BASE = "/wmts?SERVICE=WMTS&REQUEST=GetTile"
GOOD = {"VERSION": "1.0.0", "LAYER": "kampala", "STYLE": "default", "FORMAT": "image/png",
        "TILEMATRIXSET": SET, "TILEMATRIX": "19", "TILEROW": str(TILE.y),
        "TILECOL": str(TILE.x)}  # fmt: skip


def kvp(**changes: str | None) -> str:
    params = {**GOOD, **changes}
    return BASE + "".join(f"&{k}={v}" for k, v in params.items() if v is not None)


@pytest.mark.parametrize(
    ("url", "status", "code", "locator", "message"),
    [
        ("/wmts", 400, "MissingParameterValue", "SERVICE", "SERVICE=WMTS is missing"),
        ("/wmts?SERVICE=WMS&REQUEST=GetMap", 400, "InvalidParameterValue", "SERVICE", "'WMS'"),
        ("/wmts?SERVICE=WMTS", 400, "MissingParameterValue", "REQUEST", "GetCapabilities or"),
        (
            "/wmts?SERVICE=WMTS&REQUEST=GetFeatureInfo",
            501,
            "OperationNotSupported",
            "REQUEST",
            "'GetFeatureInfo' is not supported",
        ),
        (
            "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities&AcceptVersions=2.0.0",
            400,
            "VersionNegotiationFailed",
            "ACCEPTVERSIONS",
            "only WMTS 1.0.0",
        ),
        (
            "/wmts?SERVICE=WMTS&service=WMTS&REQUEST=GetCapabilities",
            400,
            "InvalidParameterValue",
            "SERVICE",
            "SERVICE is given twice",
        ),
        (kvp(VERSION="1.1.0"), 400, "InvalidParameterValue", "VERSION", "'1.1.0' is not served"),
        (kvp(LAYER=None), 400, "MissingParameterValue", "LAYER", "GetTile needs LAYER"),
        (kvp(TILEROW=""), 400, "MissingParameterValue", "TILEROW", "GetTile needs TILEROW"),
        (kvp(FORMAT=None), 400, "MissingParameterValue", "FORMAT", "GetTile needs FORMAT"),
        (
            kvp(LAYER="nolayer"),
            400,
            "InvalidParameterValue",
            "LAYER",
            "unknown layer 'nolayer'; layers: coarse, kampala",
        ),
        (kvp(STYLE="fancy"), 400, "InvalidParameterValue", "STYLE", "only style is 'default'"),
        (kvp(FORMAT="image/jpeg"), 400, "InvalidParameterValue", "FORMAT", "tiles are image/png"),
        (
            kvp(TILEMATRIXSET="GoogleMapsCompatible"),
            400,
            "InvalidParameterValue",
            "TILEMATRIXSET",
            f"it has '{SET}'",
        ),
        (
            kvp(TILEMATRIXSET="GoogleMapsCompatible-17-19"),
            400,
            "InvalidParameterValue",
            "TILEMATRIXSET",
            "for layer 'kampala'",
        ),
        (kvp(TILEMATRIX="18"), 400, "InvalidParameterValue", "TILEMATRIX", "are 19..22"),
        (kvp(TILEMATRIX="019"), 400, "InvalidParameterValue", "TILEMATRIX", "'019'"),
        (kvp(TILEMATRIX="EPSG:3857:19"), 400, "InvalidParameterValue", "TILEMATRIX", "unknown"),
        (kvp(TILEROW="0"), 400, "TileOutOfRange", "TILEROW", "TILEROW 0 is outside layer"),
        (kvp(TILECOL="309605"), 400, "TileOutOfRange", "TILECOL", "(309606..309607)"),
        (kvp(TILECOL="-1"), 400, "InvalidParameterValue", "TILECOL", "not a tile index"),
        (kvp(TILEROW="0261636"), 400, "InvalidParameterValue", "TILEROW", "no sign or leading"),
        (kvp(TILEROW="1.5"), 400, "InvalidParameterValue", "TILEROW", "'1.5'"),
        (kvp(TILEROW="9" * 5000), 400, "InvalidParameterValue", "TILEROW", "..."),
        (kvp(LAYER="x" * 5000), 400, "InvalidParameterValue", "LAYER", "xxx..."),
        (kvp(WAIT="-1"), 400, "InvalidParameterValue", "WAIT", "seconds >= 0"),
        (kvp(WAIT="nan"), 400, "InvalidParameterValue", "WAIT", "seconds >= 0"),
    ],
)
def test_kvp_errors_are_exception_reports(client, url, status, code, locator, message):
    r = client.get(url)
    assert r.status_code == status, r.text
    got_code, got_locator, text = exception(r)
    assert (got_code, got_locator) == (code, locator)
    assert message in text and len(text) < 300  # oversize values are cut, not echoed


@pytest.mark.parametrize(
    ("path", "status", "code", "locator"),
    [
        (
            f"/wmts/1.0.0/nolayer/default/{SET}/19/{TILE.y}/{TILE.x}.png",
            404,
            "InvalidParameterValue",
            "LAYER",
        ),
        (
            f"/wmts/1.0.0/kampala/fancy/{SET}/19/{TILE.y}/{TILE.x}.png",
            404,
            "InvalidParameterValue",
            "STYLE",
        ),
        (
            f"/wmts/1.0.0/kampala/default/{SET}/19/{TILE.y}/{TILE.x}.jpg",
            404,
            "InvalidParameterValue",
            "FORMAT",
        ),
        (
            f"/wmts/1.0.0/kampala/default/other/19/{TILE.y}/{TILE.x}.png",
            404,
            "InvalidParameterValue",
            "TILEMATRIXSET",
        ),
        (
            f"/wmts/1.0.0/kampala/default/{SET}/23/{TILE.y}/{TILE.x}.png",
            404,
            "InvalidParameterValue",
            "TILEMATRIX",
        ),
        (
            f"/wmts/1.0.0/kampala/default/{SET}/19/{TILE.y}/{TILE.x + 2}.png",
            404,
            "TileOutOfRange",
            "TILECOL",
        ),
        (
            f"/wmts/1.0.0/kampala/default/{SET}/19/{TILE.y}/x.png",
            400,
            "InvalidParameterValue",
            "TILECOL",
        ),
        (
            f"/wmts/1.0.0/kampala/default/{SET}/19/{TILE.y}/{'9' * 5000}.png",
            400,
            "InvalidParameterValue",
            "TILECOL",
        ),
        (REST + "?wait=abc", 400, "InvalidParameterValue", "WAIT"),
    ],
)
def test_restful_errors_are_exception_reports(client, path, status, code, locator):
    r = client.get(path)
    assert r.status_code == status, r.text
    assert exception(r)[:2] == (code, locator)
