"""Archive layers: an exported area served back read-only through the same tile routes, with the
same headers, TileJSON from the archive's metadata, and clear start-up errors."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from pmtiles.reader import MmapSource, Reader
from pmtiles.tile import Compression, TileType, zxy_to_tileid
from pmtiles.writer import write as pmtiles_write
from pydantic import ValidationError
from redis import Redis
from rq import Queue

from app.archive import PMTilesArchive
from app.export import export_area, plan_export
from app.main import create_app
from app.settings import load_layers_file
from app.store import FileTileStore
from app.tiles import Block, Tile
from tests.service.test_export import AREA_TILES, LAYER, fill, tile_png
from tests.service.test_seed import AREA, LOOPBACK

FORMATS = ["mbtiles", "pmtiles"]
MISSING = next(t for t in AREA_TILES if t.z == 21)  # not in the archives


@pytest.fixture
def archives(make_settings, tmp_path: Path) -> dict[str, Path]:
    """The seed area exported to both formats, one z21 tile missing."""
    settings = make_settings([LAYER])
    store = FileTileStore(settings.tiles_dir)
    fill(store)
    store.delete("seedarea", MISSING)
    plan = plan_export(settings.layers["seedarea"], tuple(AREA), 19, 21, 1000)
    folder = tmp_path / "archives"
    folder.mkdir()
    paths = {}
    for fmt in FORMATS:
        paths[fmt] = folder / f"area.{fmt}"
        export_area(store, plan, paths[fmt], fmt)  # type: ignore[arg-type]
    shutil.rmtree(settings.tiles_dir)  # served from the archives alone
    return paths


def archive_layers(archives: dict[str, Path]) -> list[dict]:
    return [{"name": f"offline-{fmt}", "source": {"type": fmt, "path": str(path)}}
            for fmt, path in archives.items()]  # fmt: skip


@pytest.fixture
def settings(make_settings, archives):
    return make_settings([LAYER, *archive_layers(archives)], admin_token="t")


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), client=LOOPBACK) as c:
        yield c


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_archived_tile_is_served_byte_for_byte_with_the_tile_headers(client, fmt):
    for tile in (t for t in AREA_TILES if t != MISSING):
        r = client.get(f"/tiles/offline-{fmt}/{tile.z}/{tile.x}/{tile.y}.png",
                       headers={"Origin": "https://example.org"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.content == tile_png(tile)
        assert r.headers["content-type"] == "image/png"
        assert r.headers["cache-control"] == "public, max-age=86400"
        assert r.headers["x-tile-status"] == "final"
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["last-modified"]
        again = client.get(r.url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_etag_follows_the_tile_bytes(client, fmt):
    z19 = next(t for t in AREA_TILES if t.z == 19)
    z20 = [t for t in AREA_TILES if t.z == 20]
    etag = {t: client.get(f"/tiles/offline-{fmt}/{t.z}/{t.x}/{t.y}.png").headers["etag"]
            for t in [z19, *z20]}  # fmt: skip
    assert len(set(etag.values())) == 5  # five different tiles, five tags
    other = client.get(f"/tiles/offline-{'pmtiles' if fmt == 'mbtiles' else 'mbtiles'}/"
                       f"{z19.z}/{z19.x}/{z19.y}.png")  # fmt: skip
    assert other.headers["etag"] == etag[z19]  # same bytes from the other format, same tag


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tile_missing_from_the_archive_is_404_and_queues_nothing(client, settings, fmt):
    z21 = MISSING
    r = client.get(f"/tiles/offline-{fmt}/{z21.z}/{z21.x}/{z21.y}.png")
    assert r.status_code == 404
    assert r.json()["error"] == (
        f"tile 21/{z21.x}/{z21.y} is not in the archive of layer 'offline-{fmt}'"
    )
    assert r.headers["cache-control"] == "no-store"
    redis = Redis.from_url(settings.redis_url)
    assert Queue(settings.queue_name, connection=redis).count == 0
    assert not redis.keys("rq:job:*")
    redis.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_outside_the_archive_zooms_or_bounds_is_404(client, fmt):
    z19 = next(t for t in AREA_TILES if t.z == 19)
    for path in (f"18/{z19.x // 2}/{z19.y // 2}", f"22/{z19.x * 8}/{z19.y * 8}",
                 f"19/{z19.x + 5}/{z19.y}"):  # fmt: skip
        r = client.get(f"/tiles/offline-{fmt}/{path}.png")
        assert r.status_code == 404, path
        assert "outside" in r.json()["error"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_tilejson_comes_from_the_archive_metadata(client, fmt):
    tj = client.get(f"/offline-{fmt}/tiles.json").json()
    assert (tj["minzoom"], tj["maxzoom"]) == (19, 21)
    assert tj["bounds"] == pytest.approx(AREA, abs=1e-7)
    assert tj["attribution"] == "Imagery OAM CC-BY 4.0"
    assert tj["description"] == "Seed area"
    assert tj["tiles"] == [f"http://testserver/tiles/offline-{fmt}/{{z}}/{{x}}/{{y}}.png"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_archive_layer_cannot_be_seeded_or_exported(client, fmt):
    auth = {"Authorization": "Bearer t"}
    body = {"layer": f"offline-{fmt}", "bbox": AREA, "minzoom": 19, "maxzoom": 20}
    r = client.post("/seed", json=body, headers=auth)
    assert r.status_code == 422
    assert f"layer 'offline-{fmt}' is read-only" in r.json()["error"]
    body = {"layer": f"offline-{fmt}", "bbox": AREA, "minzoom": 19, "maxzoom": 20, "format": fmt}
    r = client.post("/export", json=body, headers=auth)
    assert r.status_code == 422
    assert "copy that file instead" in r.json()["error"]


def layers_file(tmp_path: Path, layer: dict) -> Path:
    path = tmp_path / "layers.yml"
    path.write_text(yaml.safe_dump({"layers": [layer]}))
    return path


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_relative_path_is_read_from_the_layers_files_folder(tmp_path, archives, fmt):
    path = layers_file(archives[fmt].parent,
                       {"name": "a", "source": {"type": fmt, "path": archives[fmt].name},
                        "max_zoom": 19})  # fmt: skip
    layer = load_layers_file(path).layers[0]
    assert layer.source is not None and layer.source.path == archives[fmt]
    assert (layer.root_zoom, layer.max_zoom) == (19, 19)  # the file's setting wins


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, fmt: d / f"absent.{fmt}", "source.path: cannot read"),
        (lambda d, fmt: _write(d / f"text.{fmt}", b"hello, not an archive"), "is not a"),
        (lambda d, fmt: _write(d / f"empty.{fmt}", b""), "is not a"),
    ],
)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_bad_archive_stops_start_up_naming_the_setting(tmp_path, make, message, fmt):
    path = make(tmp_path, fmt)
    source = {"type": fmt, "path": str(path)}
    with pytest.raises(ValidationError) as e:
        load_layers_file(layers_file(tmp_path, {"name": "a", "source": source}))
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_the_wrong_kind_of_archive_is_named(tmp_path, archives):
    with pytest.raises(ValidationError, match="is not an MBTiles file"):
        load_layers_file(layers_file(tmp_path, {"name": "a", "source": {
            "type": "mbtiles", "path": str(archives["pmtiles"])}}))  # fmt: skip
    with pytest.raises(ValidationError, match="is not a PMTiles archive"):
        load_layers_file(layers_file(tmp_path, {"name": "a", "source": {
            "type": "pmtiles", "path": str(archives["mbtiles"])}}))  # fmt: skip


def test_imagery_and_source_together_or_neither_are_refused(tmp_path, archives):
    both = {**LAYER, "name": "a", "source": {"type": "pmtiles", "path": str(archives["pmtiles"])}}
    with pytest.raises(ValidationError, match="give either imagery"):
        load_layers_file(layers_file(tmp_path, both))
    neither = {k: v for k, v in LAYER.items() if k != "imagery"}
    with pytest.raises(ValidationError, match="needs imagery .generated. or source"):
        load_layers_file(layers_file(tmp_path, neither))
    unknown = {"name": "a", "source": {"type": "geojson", "path": str(archives["pmtiles"])}}
    with pytest.raises(ValidationError, match="'mbtiles' or 'pmtiles'"):
        load_layers_file(layers_file(tmp_path, unknown))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_generated_layer_still_needs_root_zoom_1(tmp_path):
    with pytest.raises(ValidationError, match="root_zoom of a generated layer must be at least"):
        load_layers_file(layers_file(tmp_path, {**LAYER, "root_zoom": 0}))


def test_a_large_pmtiles_with_leaf_directories_is_read_as_the_pmtiles_reader_reads_it(tmp_path):
    """40,000 distinct tiles: the directory no longer fits the root, so lookups go through
    leaf directories (which our exports of small areas never have)."""
    path = tmp_path / "big.pmtiles"
    rng = random.Random(1)
    grid = sorted(((12, x, y) for x in range(200) for y in range(200)),
                  key=lambda t: zxy_to_tileid(*t))  # fmt: skip
    with pmtiles_write(path) as w:
        for z, x, y in grid:
            padding = b"." * rng.randint(0, 50)  # irregular lengths: the directory compresses badly
            w.write_tile(zxy_to_tileid(z, x, y), f"{z}/{x}/{y}.".encode() + padding)
        w.finalize(
            {"tile_type": TileType.PNG, "tile_compression": Compression.NONE,
             "min_lon_e7": 0, "min_lat_e7": 0, "max_lon_e7": 10**7, "max_lat_e7": 10**7,
             "center_zoom": 12, "center_lon_e7": 0, "center_lat_e7": 0}, {},
        )  # fmt: skip
    archive = PMTilesArchive(path)
    assert archive.header["leaf_directory_length"] > 0
    with path.open("rb") as f:
        reader = Reader(MmapSource(f))
        for z, x, y in grid[::97]:
            data = archive.get(Tile(x, y, z))
            assert data == reader.get(z, x, y)
            assert data is not None and data.startswith(f"{z}/{x}/{y}.".encode())
    assert archive.get(Tile(250, 250, 12)) is None


def test_a_replaced_archive_is_served_anew(client, archives, tmp_path):
    z19 = next(t for t in AREA_TILES if t.z == 19)
    url = f"/tiles/offline-pmtiles/{z19.z}/{z19.x}/{z19.y}.png"
    before = client.get(url)
    assert before.content == tile_png(z19)
    # Another export of a store where the tile differs replaces the file (as --force does).
    other = tmp_path / "other"
    store = FileTileStore(other)
    block = next(b for b in {Block.of("seedarea", t) for t in AREA_TILES if t.z == 19})
    store.put_block(block, [tile_png(Tile(0, 0, 0))] * 4, {"model": "test"})
    plan = plan_export(load_layers_file(layers_file(tmp_path, LAYER)).layers[0], tuple(AREA),
                       19, 19, 1000)  # fmt: skip
    export_area(store, plan, archives["pmtiles"], "pmtiles", force=True)
    after = client.get(url)
    assert after.status_code == 200
    assert after.content == tile_png(Tile(0, 0, 0)) != before.content
    assert after.headers["etag"] != before.headers["etag"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_wmts_offers_the_archive_layer_and_serves_its_tiles(client, fmt):
    """An exported area served back offline is a WMTS layer like any other."""
    caps = client.get("/wmts/1.0.0/WMTSCapabilities.xml")
    assert caps.status_code == 200
    assert f"<ows:Identifier>offline-{fmt}</ows:Identifier>" in caps.text
    tile = next(t for t in AREA_TILES if t != MISSING and t.z == 20)
    r = client.get("/wmts", params={
        "SERVICE": "WMTS", "REQUEST": "GetTile", "VERSION": "1.0.0", "LAYER": f"offline-{fmt}",
        "STYLE": "default", "TILEMATRIXSET": "GoogleMapsCompatible-19-21", "TILEMATRIX": "20",
        "TILEROW": str(tile.y), "TILECOL": str(tile.x), "FORMAT": "image/png",
    })  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.content == tile_png(tile)
