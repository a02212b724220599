"""The WMTS 1.0.0 capabilities document through the ASGI app: one tile matrix set per zoom
range, limits that are exactly the tiles served, URLs that follow a trusted proxy, and the
element order of the schema in everything GDAL and OWSLib read."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import mercantile
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.tiles import Block, Tile
from app.wmts import OWS_NS, SCALE_DENOMINATOR_Z0, WMTS_NS
from tests.conftest import KAMPALA_LAYER
from tests.service.test_wmts import COARSE, NS, SET, capabilities, exception, layer_element, png


@pytest.fixture
def settings(make_settings):
    return make_settings([KAMPALA_LAYER, COARSE], wait_default=0.0)


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
