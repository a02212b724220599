"""Read-only layers served from an MBTiles or PMTiles file (`source: {type, path}` in the layers
file): an exported area served back offline, through the same routes and TileJSON."""

from __future__ import annotations

import gzip
import hashlib
import json
import mmap
import sqlite3
import stat
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

from pmtiles.tile import (
    Compression,
    Entry,
    MagicNumberNotFound,
    SpecVersionUnsupported,
    TileType,
    deserialize_directory,
    deserialize_header,
    find_tile,
    zxy_to_tileid,
)
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from app.store import StoredTile
from app.tiles import Tile

WORLD = (-180.0, -85.0511287798066, 180.0, 85.0511287798066)


class ArchiveSource(BaseModel):
    """`source: {type: mbtiles|pmtiles, path: FILE}`; a relative path is read from the layers
    file's folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["mbtiles", "pmtiles"]
    path: Path

    @field_validator("path")
    @classmethod
    def _resolve(cls, path: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        return Path(base) / path if base is not None and not path.is_absolute() else path


class ArchiveError(ValueError):
    """The file is missing, unreadable, or not an archive of PNG tiles."""


@dataclass(frozen=True)
class ArchiveInfo:
    """What a layer takes from the archive's own metadata."""

    name: str
    attribution: str
    bounds: tuple[float, float, float, float]
    minzoom: int
    maxzoom: int


def _clamped(bounds: tuple[float, ...]) -> tuple[float, float, float, float]:
    """Within Web Mercator's world: rounding in the file must not make a layer invalid."""
    w, s, e, n = bounds
    return (max(w, WORLD[0]), max(s, WORLD[1]), min(e, WORLD[2]), min(n, WORLD[3]))


class TileArchive(Protocol):
    info: ArchiveInfo
    mtime: float

    def get(self, tile: Tile) -> bytes | None: ...


class MBTilesArchive:
    def __init__(self, path: Path):
        self.path = path
        self.mtime = path.stat().st_mtime
        try:
            # Read-only; one connection shared by the request threads, behind a lock.
            uri = path.resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            meta = dict(self._db.execute("SELECT name, value FROM metadata").fetchall())
            zooms = self._db.execute(
                "SELECT min(zoom_level), max(zoom_level) FROM tiles"
            ).fetchone()
        except sqlite3.Error as e:
            raise ArchiveError(f"{path} is not an MBTiles file ({e})") from None
        self._lock = threading.Lock()
        if meta.get("format", "png") != "png":
            raise ArchiveError(f"{path} holds {meta['format']!r} tiles; only png is served")
        if zooms[0] is None:
            raise ArchiveError(f"{path} holds no tile")
        try:
            text = meta.get("bounds")
            bounds = tuple(float(v) for v in text.split(",")) if text else WORLD
            minzoom = int(meta.get("minzoom", zooms[0]))
            maxzoom = int(meta.get("maxzoom", zooms[1]))
        except ValueError as e:
            raise ArchiveError(f"{path} has malformed metadata: {e}") from None
        if len(bounds) != 4:
            raise ArchiveError(f"{path} has malformed metadata: bounds {meta['bounds']!r}")
        self.info = ArchiveInfo(
            name=meta.get("name", path.stem),
            attribution=meta.get("attribution", ""),
            bounds=_clamped(bounds),
            minzoom=minzoom,
            maxzoom=maxzoom,
        )

    def get(self, tile: Tile) -> bytes | None:
        tms_row = (1 << tile.z) - 1 - tile.y
        with self._lock:
            row = self._db.execute(
                "SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                (tile.z, tile.x, tms_row),
            ).fetchone()
        return bytes(row[0]) if row else None


class PMTilesArchive:
    def __init__(self, path: Path):
        self.path = path
        self.mtime = path.stat().st_mtime
        with path.open("rb") as f:
            try:
                self._data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file
                raise ArchiveError(f"{path} is not a PMTiles v3 archive (empty)") from None
        try:
            self.header = deserialize_header(self._data[:127])
            raw = self._data[self.header["metadata_offset"] :][: self.header["metadata_length"]]
            if self.header["internal_compression"] == Compression.GZIP:
                raw = gzip.decompress(raw)
            meta = json.loads(raw) if raw else {}
        except (MagicNumberNotFound, UnicodeDecodeError):
            raise ArchiveError(f"{path} is not a PMTiles archive (no magic number)") from None
        except SpecVersionUnsupported:
            raise ArchiveError(f"{path} is not a PMTiles v3 archive") from None
        except (OSError, ValueError, EOFError) as e:
            raise ArchiveError(f"{path} has unreadable metadata ({e})") from None
        if self.header["tile_type"] != TileType.PNG:
            raise ArchiveError(f"{path} holds {self.header['tile_type'].name} tiles; only png")
        if self.header["tile_compression"] not in (Compression.NONE, Compression.UNKNOWN):
            raise ArchiveError(f"{path} compresses its tiles; png tiles must be stored plain")
        h = self.header
        self.info = ArchiveInfo(
            name=str(meta.get("name", path.stem)),
            attribution=str(meta.get("attribution", "")),
            bounds=_clamped(
                (
                    h["min_lon_e7"] / 1e7,
                    h["min_lat_e7"] / 1e7,
                    h["max_lon_e7"] / 1e7,
                    h["max_lat_e7"] / 1e7,
                )
            ),  # fmt: skip
            minzoom=h["min_zoom"],
            maxzoom=h["max_zoom"],
        )

    @lru_cache(maxsize=256)  # noqa: B019 - one archive per layer, kept for the process's life
    def _directory(self, offset: int, length: int) -> list[Entry]:
        return deserialize_directory(self._data[offset : offset + length])

    def get(self, tile: Tile) -> bytes | None:
        tile_id = zxy_to_tileid(tile.z, tile.x, tile.y)
        offset, length = self.header["root_offset"], self.header["root_length"]
        for _ in range(4):  # the spec's maximum depth of leaf directories
            entry = find_tile(self._directory(offset, length), tile_id)
            if entry is None:
                return None
            if entry.run_length > 0:
                start = self.header["tile_data_offset"] + entry.offset
                return self._data[start : start + entry.length]
            offset = self.header["leaf_directory_offset"] + entry.offset
            length = entry.length
        return None


_OPEN: dict[tuple[Path, int, int], TileArchive] = {}
_OPEN_LOCK = threading.Lock()


def open_archive(source: ArchiveSource) -> TileArchive:
    """The archive of a source, opened once (again if the file was replaced since)."""
    try:
        st = source.path.stat()
    except OSError as e:
        raise ArchiveError(f"cannot read {source.path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):  # the stat above, not a second one per tile
        raise ArchiveError(f"{source.path} is not a file")
    key = (source.path.resolve(), st.st_mtime_ns, st.st_size)
    with _OPEN_LOCK:
        if key not in _OPEN:
            opener = MBTilesArchive if source.type == "mbtiles" else PMTilesArchive
            archive = opener(source.path)
            for stale in [k for k in _OPEN if k[0] == key[0]]:  # the file was replaced
                del _OPEN[stale]
            _OPEN[key] = archive
        return _OPEN[key]


def archive_tile(source: ArchiveSource, tile: Tile) -> StoredTile | None:
    """A tile of an archive as the tile routes serve it: ETag from its bytes, Last-Modified
    from the file."""
    archive = open_archive(source)
    data = archive.get(tile)
    if data is None:
        return None
    etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
    return StoredTile(data, archive.mtime, etag)
