"""OGC WMTS 1.0.0 for every layer: the capabilities document, the tile matrix sets, and the
OWS ExceptionReport. XML only; the routes in `app.routes.wmts` resolve requests with it."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

import mercantile

from app.seeding.plan import tile_rect
from app.settings import Layer
from app.tiles import TILE_SIZE, TileRect

WMTS_NS = "http://www.opengis.net/wmts/1.0"
OWS_NS = "http://www.opengis.net/ows/1.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
for _prefix, _uri in (("", WMTS_NS), ("ows", OWS_NS), ("xlink", XLINK_NS), ("xsi", XSI_NS)):
    ET.register_namespace(_prefix, _uri)

VERSION = "1.0.0"
STYLE = "default"
FORMAT = "image/png"
CRS = "urn:ogc:def:crs:EPSG::3857"
WELL_KNOWN_SCALE_SET = "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible"
# GoogleMapsCompatible (WMTS 1.0.0 annex E.4): zoom 0 is one 256 px tile over the whole
# spherical Mercator square; the scale denominator uses the OGC 0.28 mm pixel.
HALF_WORLD = math.pi * 6378137.0
SCALE_DENOMINATOR_Z0 = 2 * HALF_WORLD / TILE_SIZE / 0.00028
CAPABILITIES_PATH = "/wmts/1.0.0/WMTSCapabilities.xml"
KVP_PATH = "/wmts"
TILE_TEMPLATE = "/wmts/1.0.0/{layer}/{Style}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.png"
MEDIA_TYPE = "application/xml"


def matrix_set_id(layer: Layer) -> str:
    """GoogleMapsCompatible cut to the layer's zooms: layers with the same zooms share one."""
    return f"GoogleMapsCompatible-{layer.root_zoom}-{layer.max_zoom}"


def limits(layer: Layer, zoom: int) -> TileRect:
    """The tiles of the layer at this zoom (its TileMatrixLimits): those the tile route serves."""
    return tile_rect(layer.bounds, zoom)


class WmtsError(Exception):
    """An OWS exception (OGC 06-121r3 table 25, WMTS 1.0.0 table 24): code, locator, message.
    KVP answers with the status OWS Common gives the code; the RESTful URLs answer 404 for a
    resource that does not exist (`missing`), as the tile routes do."""

    KVP_STATUS = {
        "MissingParameterValue": 400,
        "InvalidParameterValue": 400,
        "TileOutOfRange": 400,
        "VersionNegotiationFailed": 400,
        "OperationNotSupported": 501,
    }

    def __init__(self, code: str, locator: str | None, message: str, missing: bool = False):
        super().__init__(message)
        self.code, self.locator, self.message, self.missing = code, locator, message, missing

    def status(self, restful: bool) -> int:
        if restful:
            return 404 if self.missing else 400
        return self.KVP_STATUS.get(self.code, 500)


def quoted(value: str, limit: int = 64) -> str:
    """A client's value for an error message: repr'd, and cut so an oversize one is not echoed."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


CANONICAL_INT = re.compile(r"0|[1-9][0-9]{0,9}")  # one spelling per tile: no sign, no 0 padding


def parse_index(name: str, value: str) -> int:
    if not CANONICAL_INT.fullmatch(value):
        raise WmtsError("InvalidParameterValue", name,
                        f"{name} {quoted(value)} is not a tile index (a whole number from 0, "
                        "no sign or leading zeros)")  # fmt: skip
    return int(value)


@dataclass(frozen=True)
class TileRequest:
    """A GetTile resolved to a layer's tile: z = TileMatrix, x = TileCol, y = TileRow."""

    layer: Layer
    z: int
    x: int
    y: int


def resolve_tile(layers: dict[str, Layer], layer: str, style: str | None, matrix_set: str,
                 matrix: str, row: str, col: str, fmt: str) -> TileRequest:  # fmt: skip
    """Check every GetTile parameter against the capabilities; raise the WmtsError a client
    should see for the first one that is wrong."""
    found = layers.get(layer)
    if found is None:
        raise WmtsError("InvalidParameterValue", "LAYER",
                        f"unknown layer {quoted(layer)}; layers: {', '.join(sorted(layers))}",
                        missing=True)  # fmt: skip
    if style not in (None, "", STYLE):
        raise WmtsError("InvalidParameterValue", "STYLE",
                        f"unknown style {quoted(style)}: the only style is {STYLE!r}",
                        missing=True)  # fmt: skip
    if fmt != FORMAT:
        raise WmtsError(
            "InvalidParameterValue",
            "FORMAT",
            f"unknown format {quoted(fmt)}: tiles are {FORMAT}",
            missing=True,
        )
    expected = matrix_set_id(found)
    if matrix_set != expected:
        raise WmtsError("InvalidParameterValue", "TILEMATRIXSET",
                        f"unknown tile matrix set {quoted(matrix_set)} for layer "
                        f"{found.name!r}: it has {expected!r}", missing=True)  # fmt: skip
    zooms = range(found.root_zoom, found.max_zoom + 1)
    if matrix not in {str(z) for z in zooms}:
        raise WmtsError("InvalidParameterValue", "TILEMATRIX",
                        f"unknown tile matrix {quoted(matrix)} in {expected!r}: its matrices "
                        f"are {zooms.start}..{zooms.stop - 1}", missing=True)  # fmt: skip
    z = int(matrix)
    y, x = parse_index("TILEROW", row), parse_index("TILECOL", col)
    rect = limits(found, z)
    for name, value, low, high in (("TILEROW", y, rect.y0, rect.y1),
                                   ("TILECOL", x, rect.x0, rect.x1)):  # fmt: skip
        if not low <= value <= high:
            raise WmtsError("TileOutOfRange", name,
                            f"{name} {value} is outside layer {found.name!r} at TileMatrix {z} "
                            f"({low}..{high})", missing=True)  # fmt: skip
    return TileRequest(found, z, x, y)


def _ows(tag: str) -> str:
    return f"{{{OWS_NS}}}{tag}"


def _wmts(tag: str) -> str:
    return f"{{{WMTS_NS}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: object = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = str(text)
    return element


def _corner(x: float, y: float) -> str:
    return f"{x:.9f} {y:.9f}"


def capabilities(layers: Iterable[Layer], base_url: str) -> bytes:
    """The ServiceMetadata document (WMTS 1.0.0 clause 7.1), element order as in its schema."""
    layers = list(layers)
    root = ET.Element(_wmts("Capabilities"), {
        "version": VERSION,
        f"{{{XSI_NS}}}schemaLocation": f"{WMTS_NS} "
        "http://schemas.opengis.net/wmts/1.0/wmtsGetCapabilities_response.xsd",
    })  # fmt: skip
    service = _sub(root, _ows("ServiceIdentification"))
    _sub(service, _ows("Title"), "mapcascade")
    _sub(
        service,
        _ows("Abstract"),
        "Map tiles generated from remote-sensing imagery by a "
        "cascaded conditioned diffusion model; tiles not generated yet are generated on request.",
    )
    _sub(service, _ows("ServiceType"), "OGC WMTS")
    _sub(service, _ows("ServiceTypeVersion"), VERSION)
    _operations(_sub(root, _ows("OperationsMetadata")), base_url)
    contents = _sub(root, _wmts("Contents"))
    for layer in layers:
        _layer(contents, layer, base_url)
    sets = {matrix_set_id(layer): layer for layer in layers}
    for identifier, layer in sets.items():
        _matrix_set(contents, identifier, layer.root_zoom, layer.max_zoom)
    _sub(root, _wmts("ServiceMetadataURL"), **{f"{{{XLINK_NS}}}href": base_url + CAPABILITIES_PATH})
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _operations(parent: ET.Element, base_url: str) -> None:
    for name in ("GetCapabilities", "GetTile"):
        http = _sub(_sub(_sub(parent, _ows("Operation"), name=name), _ows("DCP")), _ows("HTTP"))
        get = _sub(http, _ows("Get"), **{f"{{{XLINK_NS}}}href": f"{base_url}{KVP_PATH}?"})
        allowed = _sub(_sub(get, _ows("Constraint"), name="GetEncoding"), _ows("AllowedValues"))
        _sub(allowed, _ows("Value"), "KVP")


def _layer(contents: ET.Element, layer: Layer, base_url: str) -> None:
    west, south, east, north = layer.bounds
    element = _sub(contents, _wmts("Layer"))
    _sub(element, _ows("Title"), layer.title or layer.name)
    abstract = ". ".join(part.rstrip(".") for part in (layer.title, layer.attribution) if part)
    _sub(element, _ows("Abstract"), abstract or layer.name)
    wgs84 = _sub(element, _ows("WGS84BoundingBox"))
    _sub(wgs84, _ows("LowerCorner"), _corner(west, south))
    _sub(wgs84, _ows("UpperCorner"), _corner(east, north))
    _sub(element, _ows("Identifier"), layer.name)
    # The same box in the matrix set's CRS: GDAL takes it as the raster's extent.
    x0, y0 = mercantile.xy(west, south)
    x1, y1 = mercantile.xy(east, north)
    mercator = _sub(element, _ows("BoundingBox"), crs=CRS)
    _sub(mercator, _ows("LowerCorner"), _corner(x0, y0))
    _sub(mercator, _ows("UpperCorner"), _corner(x1, y1))
    style = _sub(element, _wmts("Style"), isDefault="true")
    _sub(style, _ows("Title"), "Default")
    _sub(style, _ows("Identifier"), STYLE)
    _sub(element, _wmts("Format"), FORMAT)
    link = _sub(element, _wmts("TileMatrixSetLink"))
    _sub(link, _wmts("TileMatrixSet"), matrix_set_id(layer))
    set_limits = _sub(link, _wmts("TileMatrixSetLimits"))
    for z in range(layer.root_zoom, layer.max_zoom + 1):
        rect = limits(layer, z)
        tm = _sub(set_limits, _wmts("TileMatrixLimits"))
        _sub(tm, _wmts("TileMatrix"), z)
        _sub(tm, _wmts("MinTileRow"), rect.y0)
        _sub(tm, _wmts("MaxTileRow"), rect.y1)
        _sub(tm, _wmts("MinTileCol"), rect.x0)
        _sub(tm, _wmts("MaxTileCol"), rect.x1)
    template = base_url + TILE_TEMPLATE.replace("{layer}", layer.name)
    _sub(element, _wmts("ResourceURL"), format=FORMAT, resourceType="tile", template=template)


def _matrix_set(contents: ET.Element, identifier: str, first: int, last: int) -> None:
    element = _sub(contents, _wmts("TileMatrixSet"))
    _sub(element, _ows("Title"), f"Google Maps compatible (EPSG:3857), zooms {first}..{last}")
    _sub(element, _ows("Identifier"), identifier)
    box = _sub(element, _ows("BoundingBox"), crs=CRS)
    _sub(box, _ows("LowerCorner"), _corner(-HALF_WORLD, -HALF_WORLD))
    _sub(box, _ows("UpperCorner"), _corner(HALF_WORLD, HALF_WORLD))
    _sub(element, _ows("SupportedCRS"), CRS)
    _sub(element, _wmts("WellKnownScaleSet"), WELL_KNOWN_SCALE_SET)
    for z in range(first, last + 1):
        matrix = _sub(element, _wmts("TileMatrix"))
        _sub(matrix, _ows("Identifier"), z)
        _sub(matrix, _wmts("ScaleDenominator"), repr(SCALE_DENOMINATOR_Z0 / (1 << z)))
        _sub(matrix, _wmts("TopLeftCorner"), _corner(-HALF_WORLD, HALF_WORLD))
        _sub(matrix, _wmts("TileWidth"), TILE_SIZE)
        _sub(matrix, _wmts("TileHeight"), TILE_SIZE)
        _sub(matrix, _wmts("MatrixWidth"), 1 << z)
        _sub(matrix, _wmts("MatrixHeight"), 1 << z)


def exception_report(error: WmtsError) -> bytes:
    """OWS Common 1.1 ExceptionReport with one Exception."""
    root = ET.Element(_ows("ExceptionReport"), {"version": "1.1.0", XML_LANG: "en"})
    attrib = {"exceptionCode": error.code}
    if error.locator:
        attrib["locator"] = error.locator
    _sub(_sub(root, _ows("Exception"), **attrib), _ows("ExceptionText"), error.message)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
