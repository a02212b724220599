"""Export: the stored tiles of a layer's area as one MBTiles 1.3 or PMTiles v3 file, for GIS
clients and offline use. Tiles are copied byte for byte; the file is written beside OUT under a
temp name and renamed at the end, so a failed or interrupted export leaves nothing under OUT."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from pmtiles.tile import Compression, TileType, tileid_to_zxy, zxy_to_tileid
from pmtiles.writer import Writer as PMTilesWriter

from app.errors import InvalidRequest
from app.seeding.plan import AreaTiles, BBox, check_area, check_tile_limit
from app.settings import Layer
from app.store import TileStore
from app.tiles import Tile

log = logging.getLogger(__name__)

Format = Literal["mbtiles", "pmtiles"]
FORMATS: tuple[Format, ...] = ("mbtiles", "pmtiles")
MISSING_EXAMPLES = 5
MBTILES_APPLICATION_ID = 0x4D504258  # "MPBX", as the MBTiles 1.3 spec recommends

Progress = Callable[[int, int], None]


class NothingToExport(InvalidRequest):
    """The area has no stored tile: generate it first (seed, or `export --seed`)."""


class ExportFailed(Exception):
    """Writing the archive failed (full disk, unwritable folder, OUT exists); nothing was left."""


@dataclass(frozen=True)
class ExportPlan(AreaTiles):
    layer: Layer
    bbox: BBox  # clipped to the layer's bounds
    minzoom: int
    maxzoom: int


def plan_export(layer: Layer, bbox: BBox, minzoom: int, maxzoom: int, max_tiles: int) -> ExportPlan:
    """Validate an export against the layer (as a seed is) and bound its size."""
    if layer.source is not None:
        raise InvalidRequest(
            f"layer {layer.name!r} is served from {layer.source.path}: copy that file instead"
        )
    plan = ExportPlan(layer, check_area(layer, bbox, minzoom, maxzoom), minzoom, maxzoom)
    check_tile_limit("export", plan.tiles, max_tiles, "MAPCASCADE_MAX_EXPORT_TILES")
    return plan


@dataclass(frozen=True)
class Inventory:
    """What the store holds of a plan's area: the tiles to export and those missing."""

    found: list[Tile]
    missing: int
    examples: list[Tile] = field(default_factory=list)  # a few missing tiles, coarse first


def take_inventory(store: TileStore, plan: ExportPlan) -> Inventory:
    found: list[Tile] = []
    missing = 0
    examples: list[Tile] = []
    for rect in plan.rects:
        here = set(store.tiles_in(plan.layer.name, rect))
        found.extend(here)
        missing += rect.count - len(here)
        for y in range(rect.y0, rect.y1 + 1):
            if len(examples) >= MISSING_EXAMPLES or len(here) == rect.count:
                break
            for x in range(rect.x0, rect.x1 + 1):
                if Tile(x, y, rect.z) not in here and len(examples) < MISSING_EXAMPLES:
                    examples.append(Tile(x, y, rect.z))
    if not found:
        raise NothingToExport(
            f"no stored tile of layer {plan.layer.name!r} in {list(plan.bbox)} at zooms "
            f"{plan.minzoom}-{plan.maxzoom}: generate them first (mapcascade seed, or export "
            "--seed)",
            missing=missing,
        )
    found.sort(key=lambda t: zxy_to_tileid(t.z, t.x, t.y))  # PMTiles' clustered order
    return Inventory(found, missing, examples)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: Format
    tiles: int
    bytes: int
    missing: int
    examples: list[Tile]
    seconds: float


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ExportFailed(f"{out} exists: give --force to replace it")
    if out.is_dir():
        raise ExportFailed(f"{out} is a folder: give a file name")
    if not out.parent.is_dir():
        raise ExportFailed(f"folder {out.parent} does not exist")


def export_area(
    store: TileStore,
    plan: ExportPlan,
    out: Path,
    fmt: Format,
    *,
    force: bool = False,
    progress: Progress | None = None,
    inventory: Inventory | None = None,
) -> ExportResult:
    """Write the plan's stored tiles to `out`. Raises NothingToExport before writing anything
    when the area holds no tile, ExportFailed (nothing left behind) when writing fails."""
    started = time.monotonic()
    check_output(out, force)
    inventory = inventory or take_inventory(store, plan)
    write = write_mbtiles if fmt == "mbtiles" else write_pmtiles
    try:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    except OSError as e:
        raise ExportFailed(f"cannot write in {out.parent}: {e.strerror}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        written = write(tmp, plan, _tile_bytes(store, plan.layer.name, inventory, progress))
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        check_output(out, force)  # created while we wrote?
        os.replace(tmp, out)
    except (OSError, sqlite3.Error) as e:
        tmp.unlink(missing_ok=True)
        raise ExportFailed(_reason(e, out)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.monotonic() - started
    log.info("export of %s: %d tiles to %s in %.1fs", plan.layer.name, written, out, seconds)
    missing = inventory.missing + len(inventory.found) - written
    return ExportResult(out, fmt, written, out.stat().st_size, missing, inventory.examples, seconds)


def _reason(e: OSError | sqlite3.Error, out: Path) -> str:
    full = (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(e, sqlite3.Error) and "full" in str(e)
    )
    if full:
        return f"no space left on the device of {out.parent}: nothing was written to {out}"
    detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return f"writing {out} failed ({detail}): nothing was written"


def _tile_bytes(
    store: TileStore, layer: str, inventory: Inventory, progress: Progress | None
) -> Iterator[tuple[Tile, bytes]]:
    total = len(inventory.found)
    for done, tile in enumerate(inventory.found, 1):
        stored = store.get(layer, tile)
        if stored is not None:  # None: truncated since the inventory; counted as missing
            yield tile, stored.data
        if progress is not None:
            progress(done, total)


def metadata(plan: ExportPlan, zooms: tuple[int, int]) -> dict[str, str | int | list]:
    """The tileset's description, as MBTiles 1.3 names it (PMTiles recommends the same keys)."""
    layer = plan.layer
    west, south, east, north = plan.bbox
    centre_zoom = min(max(layer.center[2], zooms[0]), zooms[1])
    return {
        "name": layer.title or layer.name,
        "description": f"{layer.title or layer.name}: zooms {zooms[0]}-{zooms[1]}, "
        "exported by mapcascade",
        "attribution": layer.attribution,
        "type": "baselayer",
        "version": "1",
        "format": "png",
        "bounds": [west, south, east, north],
        "center": [(west + east) / 2, (south + north) / 2, centre_zoom],
        "minzoom": zooms[0],
        "maxzoom": zooms[1],
    }


def write_mbtiles(path: Path, plan: ExportPlan, tiles: Iterator[tuple[Tile, bytes]]) -> int:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        # No journal: the whole file is thrown away on failure, and no side file is left.
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(f"PRAGMA application_id={MBTILES_APPLICATION_ID}")
        con.execute("CREATE TABLE metadata (name text, value text)")
        con.execute(
            "CREATE TABLE tiles (zoom_level integer, tile_column integer, tile_row integer, "
            "tile_data blob)"
        )
        con.execute("BEGIN")
        zooms: set[int] = set()
        count = 0
        for tile, data in tiles:
            tms_row = (1 << tile.z) - 1 - tile.y  # MBTiles counts rows from the south
            con.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (tile.z, tile.x, tms_row, data))
            zooms.add(tile.z)
            count += 1
        if count == 0:
            raise ExportFailed("every tile of the area was removed while exporting")
        meta = metadata(plan, (min(zooms), max(zooms)))
        rows = [(k, ",".join(map(str, v)) if isinstance(v, list) else str(v))
                for k, v in meta.items()]  # fmt: skip
        con.executemany("INSERT INTO metadata VALUES (?, ?)", rows)
        con.execute("CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)")
        con.execute("CREATE UNIQUE INDEX name ON metadata (name)")
        con.execute("COMMIT")
    finally:
        con.close()
    return count


class _SpoolBesideWriter(PMTilesWriter):
    """pmtiles' writer, spooling tile data beside the output instead of in the system temp
    folder: the disk the user chose is the one that must have room (and fails cleanly)."""

    def __init__(self, f: BinaryIO, spool_dir: Path):
        super().__init__(f)
        self.tile_f.close()
        self.tile_f = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 - closed by its user


def write_pmtiles(path: Path, plan: ExportPlan, tiles: Iterator[tuple[Tile, bytes]]) -> int:
    with path.open("wb") as f:
        writer = _SpoolBesideWriter(f, path.parent)
        try:
            count = 0
            for tile, data in tiles:  # in tile id order (the inventory's), so clustered
                writer.write_tile(zxy_to_tileid(tile.z, tile.x, tile.y), data)
                count += 1
            if count == 0:
                raise ExportFailed("every tile of the area was removed while exporting")
            low = tileid_to_zxy(writer.tile_entries[0].tile_id)[0]
            high = tileid_to_zxy(writer.tile_entries[-1].tile_id)[0]
            meta = metadata(plan, (low, high))
            west, south, east, north = plan.bbox
            lon, lat = (west + east) / 2, (south + north) / 2
            centre_zoom = meta["center"][2]  # type: ignore[index]
            header = {
                "tile_type": TileType.PNG,
                "tile_compression": Compression.NONE,
                "min_lon_e7": int(west * 1e7),
                "min_lat_e7": int(south * 1e7),
                "max_lon_e7": int(east * 1e7),
                "max_lat_e7": int(north * 1e7),
                "center_zoom": centre_zoom,
                "center_lon_e7": int(lon * 1e7),
                "center_lat_e7": int(lat * 1e7),
            }
            writer.finalize(header, meta)
        finally:
            writer.tile_f.close()
    return count
