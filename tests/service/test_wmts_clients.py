"""Real GIS clients against a live API on 127.0.0.1: OWSLib parses the WMTS capabilities and
fetches tiles (KVP and RESTful); GDAL (`gdal_translate`, Debian gdal-bin) reads windows through
the WMTS driver, the XYZ URL and the KVP URL, and its pixels equal the stored tiles.

The tiles are stored before the clients ask (random pixels, so a tile in the wrong place or a
resampled one shows), and no worker runs: every answer is a final, stored tile."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mercantile
import numpy as np
import pytest
import uvicorn
from PIL import Image

from app.main import create_app
from app.store import FileTileStore
from app.tiles import Block, Tile
from tests.browser.live_service import free_port
from tests.conftest import KAMPALA

# 4x4 tiles at z20 (x 619212.., y 523272..), 2x2 at z19: one z19 block and four z20 blocks.
X0, Y0, Z = 619212, 523272, 20
_ul = mercantile.bounds(X0, Y0, Z)
_lr = mercantile.bounds(X0 + 3, Y0 + 3, Z)
EPS = 1e-7  # a centimetre inside the tiles' edges: the layer covers exactly these tiles
AREA = {
    "name": "area",
    "title": "WMTS client test area",
    "attribution": "test",
    "imagery": {"type": "dir", "path": str(KAMPALA)},
    "bounds": [_ul.west + EPS, _lr.south + EPS, _lr.east - EPS, _ul.north - EPS],
    "root_zoom": 19,
    "max_zoom": 20,
    "model": "tiny",
}
OTHER = {**AREA, "name": "other", "title": "Other zooms", "root_zoom": 18, "max_zoom": 19}
SET = "GoogleMapsCompatible-19-20"
GDAL = shutil.which("gdal_translate")
needs_gdal = pytest.mark.skipif(
    GDAL is None, reason="GDAL client test not run: gdal_translate not found (Debian gdal-bin; "
    "scripts/test.sh installs it when run as root)"
)  # fmt: skip


def random_png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class LiveArea:
    """The live API's base URL and the tiles stored in its layer `area`."""

    def __init__(self, base: str, tiles: dict[Tile, bytes]) -> None:
        self.base, self.tiles = base, tiles

    def mosaic(self, x0: int, y0: int, x1: int, y1: int, z: int = Z) -> np.ndarray:
        """The stored tiles x0..x1, y0..y1 as one RGB array."""
        rows = [
            np.hstack([np.asarray(Image.open(io.BytesIO(self.tiles[Tile(x, y, z)])).convert("RGB"))
                       for x in range(x0, x1 + 1)])
            for y in range(y0, y1 + 1)
        ]  # fmt: skip
        return np.vstack(rows)


@pytest.fixture
def live(make_settings) -> Iterator[LiveArea]:
    """The API (no worker) in a thread on a free loopback port, its layer's tiles all stored."""
    settings = make_settings([AREA, OTHER], wait_default=0.0)
    store = FileTileStore(settings.tiles_dir)
    rng = np.random.default_rng(17)
    tiles: dict[Tile, bytes] = {}
    for z in (19, 20):
        shift = Z - z
        for py in range((Y0 >> shift) // 2, ((Y0 + 3) >> shift) // 2 + 1):
            for px in range((X0 >> shift) // 2, ((X0 + 3) >> shift) // 2 + 1):
                block = Block("area", z - 1, px, py)
                data = [random_png(rng) for _ in block.children]
                store.put_block(block, data, {"model": "test"})
                tiles.update(zip(block.children, data, strict=True))
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield LiveArea(f"http://127.0.0.1:{port}", tiles)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


# ---------------------------------------------------------------------------------- OWSLib


def test_owslib_parses_layers_matrix_sets_limits_and_urls(live):
    from owslib.wmts import WebMapTileService

    for url in (live.base + "/wmts/1.0.0/WMTSCapabilities.xml",
                live.base + "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities"):  # fmt: skip
        wmts = WebMapTileService(url)
        assert wmts.identification.type == "OGC WMTS" and wmts.identification.version == "1.0.0"
        assert sorted(wmts.contents) == ["area", "other"]
        layer = wmts.contents["area"]
        assert layer.title == "WMTS client test area"
        assert layer.boundingBoxWGS84 == pytest.approx(tuple(AREA["bounds"]), abs=1e-9)
        assert layer.formats == ["image/png"] and list(layer.styles) == ["default"]
        assert list(layer.tilematrixsetlinks) == [SET]
        assert wmts.contents["other"].tilematrixsetlinks.keys() == {"GoogleMapsCompatible-18-19"}
        limits = layer.tilematrixsetlinks[SET].tilematrixlimits
        assert {
            z: (m.mintilecol, m.maxtilecol, m.mintilerow, m.maxtilerow) for z, m in limits.items()
        } == {  # fmt: skip
            "19": (X0 // 2, X0 // 2 + 1, Y0 // 2, Y0 // 2 + 1),
            "20": (X0, X0 + 3, Y0, Y0 + 3),
        }
        matrices = wmts.tilematrixsets[SET].tilematrix
        assert list(matrices) == ["19", "20"]
        assert matrices["20"].scaledenominator == pytest.approx(533.1823959624162)
        assert matrices["20"].topleftcorner == pytest.approx((-20037508.342789, 20037508.342789))
        assert (matrices["20"].tilewidth, matrices["20"].matrixwidth) == (256, 2**20)
        assert wmts.tilematrixsets[SET].crs == "urn:ogc:def:crs:EPSG::3857"
        assert layer.resourceURLs == [{
            "format": "image/png", "resourceType": "tile",
            "template": live.base + "/wmts/1.0.0/area/{Style}/{TileMatrixSet}/{TileMatrix}/"
            "{TileRow}/{TileCol}.png",
        }]  # fmt: skip
        assert [m["url"] for m in wmts.getOperationByName("GetTile").methods] == [
            live.base + "/wmts?"
        ]


def test_owslib_fetches_the_stored_tiles_by_kvp_and_rest(live):
    from owslib.util import ServiceException, openURL
    from owslib.wmts import WebMapTileService

    wmts = WebMapTileService(live.base + "/wmts/1.0.0/WMTSCapabilities.xml")
    assert not wmts.restonly  # KVP is advertised, so gettile uses it
    for z, x, y in ((20, X0 + 1, Y0 + 2), (19, X0 // 2 + 1, Y0 // 2)):
        kvp = wmts.gettile(layer="area", tilematrixset=SET, tilematrix=str(z), row=y, column=x)
        assert kvp.info()["X-Cache"] == "HIT" and kvp.read() == live.tiles[Tile(x, y, z)]
        url = wmts.buildTileResource(layer="area", tilematrixset=SET, tilematrix=str(z), row=y,
                                     column=x)  # fmt: skip
        assert url == f"{live.base}/wmts/1.0.0/area/default/{SET}/{z}/{y}/{x}.png"
        assert openURL(url).read() == live.tiles[Tile(x, y, z)]
    # A tile outside the advertised limits: OWSLib raises with the server's ExceptionReport.
    with pytest.raises(ServiceException, match="TILEROW 523276 is outside layer 'area'"):
        wmts.gettile(layer="area", tilematrixset=SET, tilematrix="20", row=Y0 + 4, column=X0)


# ------------------------------------------------------------------------------------ GDAL


def gdal(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cache = str(tmp_path / "gdal-cache")  # GDAL caches WMS/WMTS tiles; not in the home folder
    env = {**os.environ, "GDAL_DEFAULT_WMS_CACHE_PATH": cache, "NO_PROXY": "127.0.0.1",
           "no_proxy": "127.0.0.1", "GDAL_HTTP_MAX_RETRY": "0"}  # fmt: skip
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def translate_window(tmp_path: Path, source: str, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """gdal_translate the EPSG:3857 window of tiles x0..x1, y0..y1 (z20) to a PNG; RGBA array."""
    ulx, uly = mercantile.xy_bounds(x0, y0, Z).left, mercantile.xy_bounds(x0, y0, Z).top
    lrx, lry = mercantile.xy_bounds(x1, y1, Z).right, mercantile.xy_bounds(x1, y1, Z).bottom
    out = tmp_path / f"window-{abs(hash(source))}.png"
    gdal(tmp_path, "gdal_translate", "-q", "-of", "PNG", "-projwin", repr(ulx), repr(uly),
         repr(lrx), repr(lry), source, str(out))  # fmt: skip
    return np.asarray(Image.open(out))


def tms_xml(url: str) -> str:
    """GDAL's WMS driver with the TMS minidriver on an XYZ-style URL ($z/$x/$y), z20 full res."""
    return f"""<GDAL_WMS>
  <Service name="TMS"><ServerUrl>{url}</ServerUrl></Service>
  <DataWindow>
    <UpperLeftX>-20037508.342789244</UpperLeftX><UpperLeftY>20037508.342789244</UpperLeftY>
    <LowerRightX>20037508.342789244</LowerRightX><LowerRightY>-20037508.342789244</LowerRightY>
    <TileLevel>{Z}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>
    <YOrigin>top</YOrigin>
  </DataWindow>
  <Projection>EPSG:3857</Projection>
  <BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY><BandsCount>4</BandsCount>
  <Cache/>
</GDAL_WMS>"""


@needs_gdal
def test_gdal_lists_every_layer_and_places_the_area_on_its_tiles(live, tmp_path):
    caps = live.base + "/wmts/1.0.0/WMTSCapabilities.xml"
    listing = gdal(tmp_path, "gdalinfo", f"WMTS:{caps}").stdout
    assert f"SUBDATASET_1_NAME=WMTS:{caps},layer=area" in listing
    assert f"SUBDATASET_2_NAME=WMTS:{caps},layer=other" in listing
    info = gdal(tmp_path, "gdalinfo", f"WMTS:{caps},layer=area").stdout
    # The layer's extent on the z20 pixel grid: the 4x4 tiles, 1024 px, one z19 overview.
    assert "Size is 1024, 1024" in info
    ul = mercantile.xy_bounds(X0, Y0, Z)
    origin = info.split("Origin = (")[1].split(")")[0].split(",")
    assert [float(v) for v in origin] == pytest.approx([ul.left, ul.top], abs=1e-6)
    assert "Overviews: 512x512" in info


@needs_gdal
def test_gdal_windows_through_wmts_xyz_and_kvp_equal_the_stored_tiles(live, tmp_path):
    # A 2x2-tile window across the borders of the four z20 blocks.
    window = (X0 + 1, Y0 + 1, X0 + 2, Y0 + 2)
    expected = live.mosaic(*window)
    kvp = (f"{live.base}/wmts?SERVICE=WMTS&amp;REQUEST=GetTile&amp;VERSION=1.0.0&amp;LAYER=area"
           f"&amp;STYLE=default&amp;FORMAT=image/png&amp;TILEMATRIXSET={SET}"
           "&amp;TILEMATRIX=${z}&amp;TILEROW=${y}&amp;TILECOL=${x}")  # fmt: skip
    sources = {
        "WMTS driver (RESTful ResourceURL)": f"WMTS:{live.base}/wmts/1.0.0/WMTSCapabilities.xml"
        ",layer=area",
        "TMS minidriver on /tiles": tms_xml(live.base + "/tiles/area/${z}/${x}/${y}.png"),
        "TMS minidriver on WMTS KVP": tms_xml(kvp),
    }
    for name, source in sources.items():
        got = translate_window(tmp_path, source, *window)
        assert got.shape == (512, 512, 4), name
        assert (got[..., 3] == 255).all(), name
        assert np.array_equal(got[..., :3], expected), name


# ------------------------------------------------------------------------ raw HTTP, deployed

NASTY = [
    "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=%00&TILEMATRIXSET=%ff&TILEMATRIX=1&TILEROW=1"
    "&TILECOL=1&FORMAT=image/png",
    "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=seedarea&TILEMATRIXSET=x&TILEMATRIX=%D9%A1%D9%A2"
    "&TILEROW=%D9%A1&TILECOL=1&FORMAT=image/png",
    "/wmts?SERVICE=WMTS&REQUEST=" + "G" * 20000,
    "/wmts?" + "&".join(f"P{i}=1" for i in range(2000)) + "&SERVICE=WMTS",
    "/wmts?SERVICE=WMTS&REQUEST=GetTile&WAIT=1e309",
    "/wmts/1.0.0/seedarea/default/GoogleMapsCompatible-19-21/19/%2e%2e/0.png",
    "/wmts/1.0.0/%00/%00/%00/%00/%00/%00.png",
    "/wmts/1.0.0/seedarea/default/GoogleMapsCompatible-19-21/19/1/0x1f.png",
    "/wmts/1.0.0/seedarea/default/GoogleMapsCompatible-19-21/19/1e3/-0.png",
    "/wmts/1.0.0/seedarea/default/GoogleMapsCompatible-19-21/19/1/1.png?wait=nan",
]


def test_nasty_wmts_requests_get_exception_reports_never_a_server_error(live_api: str) -> None:
    """`mapcascade api` as deployed: malformed, oversize and encoded input to /wmts answers a
    4xx ExceptionReport (501 for an unknown REQUEST, as OWS Common says) that echoes no more
    than a cut of the input."""
    import httpx

    with httpx.Client(base_url=live_api, timeout=30) as client:
        for path in NASTY:
            r = client.get(path)
            where = f"{path[:80]}: {r.status_code} {r.text[:200]}"
            assert 400 <= r.status_code < 500 or (
                r.status_code == 501 and b"OperationNot" in r.content
            ), where
            if r.headers["content-type"].startswith("application/xml"):
                assert b"ExceptionReport" in r.content and len(r.content) < 1000, where
            else:  # refused before the app: the server's own limits (URL length)
                assert r.status_code in (414, 431), where
