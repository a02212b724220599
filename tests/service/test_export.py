"""`mapcascade export`: stored tiles to MBTiles and PMTiles, read back by sqlite3, the pmtiles
reader and GDAL; bad input refused with nothing written (a real full disk included)."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mercantile
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pmtiles.reader import MmapSource, Reader, all_tiles
from pmtiles.tile import Compression, TileType
from redis import Redis

from app.cli import main as cli
from app.export import ExportFailed, export_area, plan_export
from app.store import FileTileStore
from app.tiles import Block, Tile
from tests.service.test_seed import AREA, SEED_LAYER
from tests.service.test_seed_cli import server  # noqa: F401 - a live API on loopback

BBOX = ",".join(map(str, AREA))
LAYER = {**SEED_LAYER, "title": "Seed area", "attribution": "Imagery OAM CC-BY 4.0"}
# 1 + 4 + 16 tiles over zooms 19-21 (see tests/service/test_seed.py).
AREA_TILES = [Tile(*t) for t in mercantile.tiles(*AREA, zooms=[19, 20, 21])]


def tile_png(tile: Tile, noisy: bool = False) -> bytes:
    """A PNG that differs per tile (so a flipped row or a swapped tile shows)."""
    if noisy:  # incompressible: fills a small disk fast
        rng = np.random.default_rng(tile.x * 7 + tile.y * 13 + tile.z)
        img = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    else:
        img = Image.new("RGB", (256, 256), tile_colour(tile))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def tile_colour(tile: Tile) -> tuple[int, int, int]:
    return (tile.z * 10, tile.x % 256, tile.y % 256)


def fill(store: FileTileStore, zooms: range = range(19, 22), noisy: bool = False) -> None:
    """Store the area's blocks as a worker would."""
    blocks = {Block.of("seedarea", t) for t in AREA_TILES if t.z in zooms}
    for block in blocks:
        tiles = [tile_png(t, noisy) for t in block.children]
        store.put_block(block, tiles, {"model": "test"})


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def settings(make_settings):
    return make_settings([LAYER])


@pytest.fixture
def store(settings) -> FileTileStore:
    return FileTileStore(settings.tiles_dir)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def run(settings, *args: str):
    env = {"MAPCASCADE_DATA_DIR": str(settings.data_dir),
           "MAPCASCADE_LAYERS_FILE": str(settings.layers_file)}  # fmt: skip
    return CliRunner().invoke(cli, ["export", *args], env=env)


def mbtiles_tiles(path: Path) -> dict[Tile, bytes]:
    with sqlite3.connect(path) as con:
        rows = con.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
        return {Tile(x, (1 << z) - 1 - row, z): bytes(data) for z, x, row, data in rows}


def pmtiles_tiles(path: Path) -> dict[Tile, bytes]:
    with path.open("rb") as f:
        return {Tile(x, y, z): bytes(data) for (z, x, y), data in all_tiles(MmapSource(f))}


def stored(store: FileTileStore) -> dict[Tile, bytes]:
    found = {t: store.get("seedarea", t) for t in AREA_TILES}
    return {t: s.data for t, s in found.items() if s is not None}


def test_mbtiles_holds_every_stored_tile_byte_for_byte_with_complete_metadata(
    settings, store, out_dir
):
    fill(store)
    out = out_dir / "area.mbtiles"
    result = run(settings, "--layer", "seedarea", "--bbox", BBOX, "--zooms", "19-21", str(out))
    assert result.exit_code == 0, result.output
    assert f"exported 21 tiles of layer seedarea to {out} (mbtiles" in result.stdout
    assert "ETA" in result.stderr  # the progress bar

    assert mbtiles_tiles(out) == stored(store) and len(stored(store)) == 21
    with sqlite3.connect(out) as con:
        meta = dict(con.execute("SELECT name, value FROM metadata"))
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
    assert app_id == 0x4D504258
    assert meta["name"] == "Seed area"
    assert meta["format"] == "png"
    assert meta["attribution"] == "Imagery OAM CC-BY 4.0"
    assert (meta["minzoom"], meta["maxzoom"]) == ("19", "21")
    assert [float(v) for v in meta["bounds"].split(",")] == pytest.approx(AREA)
    lon, lat, zoom = meta["center"].split(",")
    assert float(lon) == pytest.approx((AREA[0] + AREA[2]) / 2)
    assert float(lat) == pytest.approx((AREA[1] + AREA[3]) / 2)
    assert 19 <= int(zoom) <= 21
    assert meta["type"] == "baselayer" and meta["version"] and meta["description"]
    assert leftovers(out_dir) == ["area.mbtiles"]  # no temp file, no sqlite journal


def test_pmtiles_read_back_by_the_pmtiles_reader_equals_the_store(settings, store, out_dir):
    fill(store)
    out = out_dir / "area.pmtiles"
    result = run(settings, "--layer", "seedarea", "--bbox", BBOX, "--zooms", "19-21", str(out))
    assert result.exit_code == 0, result.output

    assert pmtiles_tiles(out) == stored(store) and len(stored(store)) == 21
    with out.open("rb") as f:
        reader = Reader(MmapSource(f))
        header, meta = reader.header(), reader.metadata()
        for tile, data in stored(store).items():  # random access too, not only traversal
            assert reader.get(tile.z, tile.x, tile.y) == data
    assert header["tile_type"] == TileType.PNG
    assert header["tile_compression"] == Compression.NONE
    assert (header["min_zoom"], header["max_zoom"]) == (19, 21)
    assert header["clustered"]
    assert header["min_lon_e7"] / 1e7 == pytest.approx(AREA[0], abs=1e-7)
    assert header["max_lat_e7"] / 1e7 == pytest.approx(AREA[3], abs=1e-7)
    assert meta["attribution"] == "Imagery OAM CC-BY 4.0"
    assert meta["name"] == "Seed area" and meta["format"] == "png"
    assert leftovers(out_dir) == ["area.pmtiles"]


def test_the_format_comes_from_the_suffix_or_the_option(settings, store, out_dir):
    fill(store)
    out = out_dir / "area.bin"
    result = run(settings, "--bbox", BBOX, "--zooms", "19", str(out))
    assert result.exit_code == 2
    assert "give --format mbtiles|pmtiles" in result.output
    result = run(settings, "--bbox", BBOX, "--zooms", "19", "--format", "pmtiles", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:7] == b"PMTiles"


NO_GDAL = "gdalinfo not found: install Debian gdal-bin (scripts/test.sh does)"


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason=NO_GDAL)
def test_gdal_opens_the_mbtiles_and_reads_the_stored_pixels(settings, store, out_dir):
    fill(store)
    out = out_dir / "area.mbtiles"
    assert run(settings, "--bbox", BBOX, "--zooms", "19-21", str(out)).exit_code == 0
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True,
                                     check=True, text=True).stdout)  # fmt: skip
    assert info["driverShortName"] == "MBTiles"
    # The 4x4 tiles of z21, clipped by GDAL to the metadata's bounds (a little inside them).
    assert all(4 * 256 - 16 <= n <= 4 * 256 for n in info["size"]), info["size"]
    assert len(info["bands"]) >= 3
    assert info["metadata"][""]["name"] == "Seed area"
    # GDAL's pixel at the centre of each z21 tile is that tile's colour.
    for tile in (t for t in AREA_TILES if t.z == 21):
        b = mercantile.bounds(tile)
        lon, lat = (b.west + b.east) / 2, (b.south + b.north) / 2
        probe = subprocess.run(
            ["gdallocationinfo", "-valonly", "-wgs84", str(out), str(lon), str(lat)],
            capture_output=True, check=True, text=True,
        )  # fmt: skip
        values = [int(v) for v in probe.stdout.split()]
        assert tuple(values[:3]) == tile_colour(tile), tile


def test_missing_tiles_are_reported_and_the_stored_ones_exported(settings, store, out_dir):
    fill(store, zooms=range(19, 21))  # z21 not generated
    out = out_dir / "area.mbtiles"
    result = run(settings, "--bbox", BBOX, "--zooms", "19-21", str(out))
    assert result.exit_code == 0, result.output
    assert "16 of 21 tiles are not generated yet (e.g. 21/" in result.stderr
    assert "--seed generates the rest first" in result.stderr
    assert "5 tiles" in result.stdout and "16 missing" in result.stdout
    assert len(mbtiles_tiles(out)) == 5
    with sqlite3.connect(out) as con:
        meta = dict(con.execute("SELECT name, value FROM metadata"))
    assert (meta["minzoom"], meta["maxzoom"]) == ("19", "20")  # what the file holds


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--bbox", BBOX, "--zooms", "19-21"], 1, "no stored tile of layer 'seedarea'"),
        (["--bbox", "10,10,11,11", "--zooms", "19"], 2, "does not intersect layer 'seedarea'"),
        (["--bbox", BBOX, "--zooms", "19-23"], 2, "zooms 19-23 are outside layer 'seedarea'"),
        (["--bbox", BBOX, "--zooms", "19", "--layer", "nope"], 2, "unknown layer 'nope'"),
        (["--bbox", "1,2,3", "--zooms", "19"], 2, "has 3 numbers; give four: W,S,E,N"),
        (["--bbox", "a,b,c,d", "--zooms", "19"], 2, "is not four numbers W,S,E,N"),
        (["--bbox", "33,0.35,32,0.34", "--zooms", "19"], 2, "is empty (need W<E and S<N)"),
        (["--bbox", BBOX, "--zooms", "21-19"], 2, "the first zoom must not exceed the second"),
        (["--bbox", BBOX, "--zooms", "x"], 2, "is not a zoom (15) or a zoom range (14-17)"),
        (["--bbox", BBOX, "--zooms", "19", "--format", "tiff"], 2, "'tiff' is not one of"),
    ],
)
def test_bad_input_is_refused_and_nothing_written(settings, out_dir, args, code, message):
    result = run(settings, *args, str(out_dir / "area.mbtiles"))
    assert result.exit_code == code, result.output
    assert message in result.output
    assert leftovers(out_dir) == []


def test_an_oversize_area_is_refused(settings, store, out_dir, monkeypatch):
    fill(store)
    monkeypatch.setenv("MAPCASCADE_MAX_EXPORT_TILES", "20")
    result = run(settings, "--bbox", BBOX, "--zooms", "19-21", str(out_dir / "a.mbtiles"))
    assert result.exit_code == 2
    assert "the export covers 21 tiles, over the limit of 20" in result.output
    assert leftovers(out_dir) == []


def test_an_existing_out_is_kept_without_force_and_replaced_with_it(settings, store, out_dir):
    fill(store)
    out = out_dir / "area.pmtiles"
    out.write_bytes(b"precious")
    result = run(settings, "--bbox", BBOX, "--zooms", "19-21", str(out))
    assert result.exit_code == 2
    assert "exists: give --force to replace it" in result.output
    assert out.read_bytes() == b"precious"
    result = run(settings, "--bbox", BBOX, "--zooms", "19-21", "--force", str(out))
    assert result.exit_code == 0, result.output
    assert pmtiles_tiles(out) == stored(store)
    assert leftovers(out_dir) == ["area.pmtiles"]


def test_an_out_in_a_missing_folder_is_refused(settings, store, tmp_path):
    fill(store)
    result = run(settings, "--bbox", BBOX, "--zooms", "19", str(tmp_path / "no" / "a.mbtiles"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


@pytest.mark.parametrize("fmt", ["mbtiles", "pmtiles"])
def test_an_interrupted_export_leaves_nothing(settings, store, out_dir, fmt):
    fill(store)
    plan = plan_export(settings.layers["seedarea"], tuple(AREA), 19, 21, 1000)

    def interrupt(done: int, total: int) -> None:
        if done == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_area(store, plan, out_dir / f"a.{fmt}", fmt, progress=interrupt)
    assert leftovers(out_dir) == []


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    """A real 64 KiB tmpfs: writes past it fail with ENOSPC."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tiny tmpfs needs root and mount(8)")
    folder = Path(tempfile.mkdtemp(prefix="mapcascade-tinydisk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"mounting a tmpfs is not allowed here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()


@pytest.mark.parametrize("fmt", ["mbtiles", "pmtiles"])
def test_a_full_disk_is_a_clear_error_and_leaves_no_file(settings, store, tiny_disk, fmt):
    fill(store, noisy=True)  # 21 incompressible tiles, ~4 MB: far past 64 KiB
    out = tiny_disk / f"area.{fmt}"
    result = run(settings, "--bbox", BBOX, "--zooms", "19-21", str(out))
    assert result.exit_code == 1, result.output
    assert f"no space left on the device of {tiny_disk}: nothing was written to {out}" in (
        result.output
    )
    assert leftovers(tiny_disk) == []
    # The same through the module: ExportFailed, nothing left.
    plan = plan_export(settings.layers["seedarea"], tuple(AREA), 19, 21, 1000)
    with pytest.raises(ExportFailed, match="no space left"):
        export_area(store, plan, out, fmt)
    assert leftovers(tiny_disk) == []


def test_export_seed_that_ends_cancelled_exports_nothing(settings, server, out_dir):  # noqa: F811
    """No worker runs: the seed waits until the operator cancels it from another terminal."""
    redis = Redis.from_url(settings.redis_url)

    def cancel_when_submitted() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ids = [m.decode() for m in redis.zrange("mapcascade:seeds", 0, -1)]
            if ids:
                time.sleep(0.3)
                httpx.delete(f"{server}/seed/{ids[0]}")  # loopback: admin without a token
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_submitted)
    canceller.start()
    out = out_dir / "area.mbtiles"
    result = run(settings, "--bbox", BBOX, "--zooms", "19-21", "--seed", "--url", server,
                 "--interval", "0.1", str(out))  # fmt: skip
    canceller.join()
    redis.close()
    assert result.exit_code == 1, result.output
    assert "seed " in result.stdout and "cancelled: 0/21 tiles done" in result.stdout
    assert "the seed ended cancelled: nothing exported" in result.output
    assert leftovers(out_dir) == []
