"""WMTS 1.0.0 through the ASGI app on a real Redis and file store: the capabilities document,
RESTful and KVP GetTile answering what /tiles answers, and OWS ExceptionReport errors."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import mercantile
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.store import FileTileStore
from app.tiles import Block, Tile
from app.wmts import OWS_NS, SCALE_DENOMINATOR_Z0, WMTS_NS
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


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def store(settings) -> FileTileStore:
    return FileTileStore(settings.tiles_dir)


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


def test_capabilities_by_rest_and_kvp_are_the_same_document(client):
    rest = client.get("/wmts/1.0.0/WMTSCapabilities.xml")
    kvp = client.get("/wmts?SERVICE=WMTS&REQUEST=GetCapabilities")
    lower = client.get("/wmts?service=wmts&request=getcapabilities&acceptversions=1.0.0")
    # What OWSLib sends: the KVP appended to the RESTful URL.
    owslib = client.get("/wmts/1.0.0/WMTSCapabilities.xml?service=WMTS&request=GetCapabilities")
    assert rest.content == kvp.content == lower.content == owslib.content
    assert client.head("/wmts/1.0.0/WMTSCapabilities.xml").status_code == 200


def test_each_layer_links_googlemapscompatible_cut_to_its_zooms(client):
    root = capabilities(client)
    sets = {s.findtext("ows:Identifier", namespaces=NS): s
            for s in root.findall("wmts:Contents/wmts:TileMatrixSet", NS)}  # fmt: skip
    assert set(sets) == {SET, "GoogleMapsCompatible-17-19"}
    for name, zooms in (("kampala", range(19, 23)), ("coarse", range(17, 20))):
        layer = layer_element(root, name)
        link = layer.findtext("wmts:TileMatrixSetLink/wmts:TileMatrixSet", namespaces=NS)
        matrices = sets[link].findall("wmts:TileMatrix", NS)
        assert [m.findtext("ows:Identifier", namespaces=NS) for m in matrices] == [
            str(z) for z in zooms
        ]
        for m, z in zip(matrices, zooms, strict=True):
            scale = float(m.findtext("wmts:ScaleDenominator", namespaces=NS))
            assert scale == pytest.approx(559082264.0287178 / 2**z, rel=1e-12)
            assert m.findtext("wmts:MatrixWidth", namespaces=NS) == str(2**z)
            left, top = map(float, m.findtext("wmts:TopLeftCorner", namespaces=NS).split())
            assert left == pytest.approx(-20037508.342789244) and top == -left
        assert sets[link].findtext("ows:SupportedCRS", namespaces=NS) == (
            "urn:ogc:def:crs:EPSG::3857"
        )
    assert pytest.approx(559082264.0287178) == SCALE_DENOMINATOR_Z0


def test_layer_bounds_title_and_urls(client):
    root = capabilities(client)
    layer = layer_element(root, "coarse")
    assert layer.findtext("ows:Title", namespaces=NS) == "Coarse & <escaped>"
    lower = layer.findtext("ows:WGS84BoundingBox/ows:LowerCorner", namespaces=NS).split()
    upper = layer.findtext("ows:WGS84BoundingBox/ows:UpperCorner", namespaces=NS).split()
    assert [float(v) for v in lower + upper] == pytest.approx(KAMPALA_LAYER["bounds"])
    (resource,) = layer.findall("wmts:ResourceURL", NS)
    assert resource.get("resourceType") == "tile" and resource.get("format") == "image/png"
    assert resource.get("template") == (
        "http://testserver/wmts/1.0.0/coarse/{Style}/{TileMatrixSet}/{TileMatrix}/{TileRow}"
        "/{TileCol}.png"
    )
    gets = root.findall("ows:OperationsMetadata/ows:Operation/ows:DCP/ows:HTTP/ows:Get", NS)
    assert [g.get(f"{{{NS['xlink']}}}href") for g in gets] == ["http://testserver/wmts?"] * 2
    assert root.find("wmts:ServiceMetadataURL", NS).get(f"{{{NS['xlink']}}}href") == (
        "http://testserver/wmts/1.0.0/WMTSCapabilities.xml"
    )


def test_limits_are_exactly_the_tiles_served(client, store):
    """Every advertised limit is a tile /tiles serves; one step beyond it is refused."""
    root = capabilities(client)
    limits = layer_element(root, "kampala").findall(
        "wmts:TileMatrixSetLink/wmts:TileMatrixSetLimits/wmts:TileMatrixLimits", NS
    )
    assert [lim.findtext("wmts:TileMatrix", namespaces=NS) for lim in limits] == [
        "19", "20", "21", "22"
    ]  # fmt: skip
    west, south, east, north = KAMPALA_LAYER["bounds"]
    for lim in limits:
        z = int(lim.findtext("wmts:TileMatrix", namespaces=NS))
        keys = ("MinTileRow", "MaxTileRow", "MinTileCol", "MaxTileCol")
        row0, row1, col0, col1 = (int(lim.findtext(f"wmts:{k}", namespaces=NS)) for k in keys)
        expected = list(mercantile.tiles(west, south, east, north, zooms=[z]))
        assert {t.x for t in expected} == set(range(col0, col1 + 1))
        assert {t.y for t in expected} == set(range(row0, row1 + 1))
        # Stored tiles on both corners are answered; one tile beyond answers 404 on /tiles.
        for x, y in ((col0, row0), (col1, row1)):
            store.put_block(Block.of("kampala", Tile(x, y, z)), [png("red")] * 4, {})
            rest = f"/wmts/1.0.0/kampala/default/{SET}/{z}/{y}/{x}.png"
            assert client.get(rest).headers["x-cache"] == "HIT"
        for x, y, locator in ((col1 + 1, row0, "TILECOL"), (col0, row0 - 1, "TILEROW")):
            assert client.get(f"/tiles/kampala/{z}/{x}/{y}.png").status_code == 404
            r = client.get(f"/wmts/1.0.0/kampala/default/{SET}/{z}/{y}/{x}.png")
            assert r.status_code == 404 and exception(r)[:2] == ("TileOutOfRange", locator)


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


FORWARDED = {"X-Forwarded-Host": "maps.example.org", "X-Forwarded-Proto": "https",
             "X-Forwarded-Prefix": "/cascade/"}  # fmt: skip


def urls(root: ET.Element) -> set[str]:
    found = {e.get("template") for e in root.iter(f"{{{WMTS_NS}}}ResourceURL")}
    found |= {
        e.get(f"{{{NS['xlink']}}}href") for e in root.iter() if e.get(f"{{{NS['xlink']}}}href")
    }
    return found


def test_urls_follow_a_trusted_proxy_only(client, make_settings):
    # From anyone but a trusted proxy, forwarded headers are not reflected (as TileJSON).
    assert all(u.startswith("http://testserver/") for u in urls(capabilities(client,
               headers=FORWARDED)))  # fmt: skip
    proxy = make_settings([KAMPALA_LAYER], trusted_proxies=["testclient"])
    with TestClient(create_app(proxy)) as c:
        proxied = urls(capabilities(c, "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities",
                                    headers=FORWARDED))  # fmt: skip
        tilejson = c.get("/kampala/tiles.json", headers=FORWARDED).json()["tiles"][0]
    assert proxied == {
        "https://maps.example.org/cascade/wmts?",
        "https://maps.example.org/cascade/wmts/1.0.0/WMTSCapabilities.xml",
        "https://maps.example.org/cascade/wmts/1.0.0/kampala/{Style}/{TileMatrixSet}/"
        "{TileMatrix}/{TileRow}/{TileCol}.png",
    }
    assert tilejson.startswith("https://maps.example.org/cascade/")


# The children of each element in the order of the WMTS 1.0.0 / OWS 1.1 schemas, required ones
# marked "!". Every element GDAL's WMTS driver (frmts/wmts/wmtsdataset.cpp) or OWSLib
# (owslib/wmts.py) reads is here.
SCHEMA_ORDER = {
    "wmts:Capabilities": ["ows:ServiceIdentification", "ows:ServiceProvider",
                          "ows:OperationsMetadata", "wmts:Contents", "wmts:Themes",
                          "wmts:WSDL", "wmts:ServiceMetadataURL"],
    "ows:ServiceIdentification": ["ows:Title", "ows:Abstract", "ows:Keywords",
                                  "!ows:ServiceType", "!ows:ServiceTypeVersion"],
    "ows:OperationsMetadata": ["!ows:Operation"],
    "ows:Operation": ["!ows:DCP", "ows:Parameter", "ows:Constraint"],
    "ows:DCP": ["!ows:HTTP"],
    "ows:HTTP": ["!ows:Get"],
    "ows:Get": ["ows:Constraint"],
    "ows:Constraint": ["!ows:AllowedValues"],
    "ows:AllowedValues": ["!ows:Value"],
    "wmts:Contents": ["wmts:Layer", "wmts:TileMatrixSet"],
    "wmts:Layer": ["ows:Title", "ows:Abstract", "ows:Keywords", "ows:WGS84BoundingBox",
                   "!ows:Identifier", "ows:BoundingBox", "ows:Metadata", "!wmts:Style",
                   "!wmts:Format", "wmts:InfoFormat", "wmts:Dimension",
                   "!wmts:TileMatrixSetLink", "wmts:ResourceURL"],
    "ows:WGS84BoundingBox": ["!ows:LowerCorner", "!ows:UpperCorner"],
    "ows:BoundingBox": ["!ows:LowerCorner", "!ows:UpperCorner"],
    "wmts:Style": ["ows:Title", "ows:Abstract", "ows:Keywords", "!ows:Identifier",
                   "wmts:LegendURL"],
    "wmts:TileMatrixSetLink": ["!wmts:TileMatrixSet", "wmts:TileMatrixSetLimits"],
    "wmts:TileMatrixSetLimits": ["!wmts:TileMatrixLimits"],
    "wmts:TileMatrixLimits": ["!wmts:TileMatrix", "!wmts:MinTileRow", "!wmts:MaxTileRow",
                              "!wmts:MinTileCol", "!wmts:MaxTileCol"],
    "wmts:TileMatrixSet": ["ows:Title", "ows:Abstract", "ows:Keywords", "!ows:Identifier",
                           "ows:BoundingBox", "!ows:SupportedCRS", "wmts:WellKnownScaleSet",
                           "!wmts:TileMatrix"],
    "wmts:TileMatrix": ["ows:Title", "ows:Abstract", "ows:Keywords", "!ows:Identifier",
                        "!wmts:ScaleDenominator", "!wmts:TopLeftCorner", "!wmts:TileWidth",
                        "!wmts:TileHeight", "!wmts:MatrixWidth", "!wmts:MatrixHeight"],
}  # fmt: skip
REQUIRED_ATTRIBUTES = {
    "wmts:Capabilities": ["version"],
    "ows:Operation": ["name"],
    "ows:Get": ["{http://www.w3.org/1999/xlink}href"],
    "ows:Constraint": ["name"],
    "wmts:Style": ["isDefault"],  # optional in the schema; GDAL picks the default style by it
    "wmts:ResourceURL": ["format", "resourceType", "template"],
    "wmts:ServiceMetadataURL": ["{http://www.w3.org/1999/xlink}href"],
    "ows:BoundingBox": ["crs"],  # GDAL takes the box whose crs is the matrix set's CRS
}


def prefixed(tag: str) -> str:
    uri, local = tag[1:].split("}")
    return f"{ {WMTS_NS: 'wmts', OWS_NS: 'ows'}[uri] }:{local}"


def test_capabilities_follow_the_schema_in_every_element_gdal_and_owslib_read(client):
    """The official WMTS 1.0.0 XSD (schemas.opengis.net) cannot be had offline here, so the
    document is checked against every element GDAL and OWSLib read: each element's children
    appear in the schema's order, required ones present, with the attributes clients need,
    and numbers parse. (GDAL and OWSLib themselves read it in test_wmts_clients.py.)"""
    root = capabilities(client)
    assert prefixed(root.tag) == "wmts:Capabilities"
    seen = set()
    # Inside a link or a limit, TileMatrixSet and TileMatrix are names, not the definitions.
    leaves = {("wmts:TileMatrixSetLink", "wmts:TileMatrixSet"),
              ("wmts:TileMatrixLimits", "wmts:TileMatrix")}  # fmt: skip
    for parent in root.iter():
        for element in parent:
            name = prefixed(element.tag)
            seen.add(name)
            for attribute in REQUIRED_ATTRIBUTES.get(name, []):
                assert element.get(attribute), f"{name} lacks {attribute}"
            if name not in SCHEMA_ORDER or (prefixed(parent.tag), name) in leaves:
                content = (element.text or "").strip() or element.attrib
                assert len(element) == 0 and content, f"{name}: children, or empty"
                continue
            order = [child.lstrip("!") for child in SCHEMA_ORDER[name]]
            tags = [prefixed(child.tag) for child in element]
            assert all(t in order for t in tags), f"{name}: unknown children {tags}"
            positions = [order.index(t) for t in tags]
            assert positions == sorted(positions), f"{name}: children out of schema order {tags}"
            for child in SCHEMA_ORDER[name]:
                if child.startswith("!"):
                    assert child[1:] in tags, f"{name} lacks {child[1:]}"
    assert {"wmts:Layer", "wmts:TileMatrixSet", "wmts:ResourceURL", "ows:BoundingBox",
            "wmts:TileMatrixSetLimits", "wmts:ServiceMetadataURL"} <= seen  # fmt: skip
    for corner in root.iter(f"{{{OWS_NS}}}LowerCorner"):
        assert len([float(v) for v in corner.text.split()]) == 2
    for tag in ("ScaleDenominator", "TileWidth", "MatrixWidth", "MinTileRow", "MaxTileCol"):
        for value in root.iter(f"{{{WMTS_NS}}}{tag}"):
            assert float(value.text) >= 0
