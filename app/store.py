"""Tile store: where final tiles and block metadata live, in a folder or an S3 bucket
(`app/s3store.py`), chosen by `open_store` from MAPCASCADE_STORE."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol
from urllib.parse import urlsplit

from app.tiles import Block, Tile, TileRect

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True)
class StoredTile:
    data: bytes
    mtime: float
    etag: str


class Removed(NamedTuple):
    """What a deletion removed: tiles, and blocks (counted by their metadata)."""

    tiles: int
    blocks: int


class StoreConfigError(ValueError):
    """The configured store cannot be used (unknown scheme, unreachable, no bucket, refused
    credentials): start-up stops with this one line, which names the setting to fix."""


DEFAULT_REGION = "us-east-1"  # an S3 store's region when AWS_REGION is unset (AWS's own default)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no slash at either end; "" for the bucket's root


def store_location(settings: Settings) -> Path | S3Location:
    """Where MAPCASCADE_STORE puts the tiles: a folder (unset, or set empty as
    `${MAPCASCADE_STORE:-}` in a compose file does: `tiles` in the data dir; a path; a file://
    URL) or an S3 bucket and prefix. The one reader of the setting (the API, the workers and the
    nginx front all open the store it names)."""
    url = settings.store
    if not url:
        return settings.tiles_dir
    parts = urlsplit(url)
    if parts.scheme == "":
        return Path(url)
    if parts.scheme == "file":
        return Path(parts.path)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise StoreConfigError(f"MAPCASCADE_STORE={url!r}: no bucket; give s3://bucket/prefix")
        return S3Location(parts.netloc, parts.path.strip("/"))
    raise StoreConfigError(
        f"MAPCASCADE_STORE={url!r}: unknown scheme {parts.scheme!r}; give a folder, "
        "file:///folder or s3://bucket/prefix"
    )


def tile_key(layer: str, tile: Tile) -> str:
    """Where a tile lives, relative to the store's root: the same layout in a folder and in a
    bucket, so a proxy in front serves `/{layer}/{z}/{x}/{y}.png` from either."""
    return f"{layer}/{tile.z}/{tile.x}/{tile.y}.png"


def meta_key(block: Block) -> str:
    return f"{block.layer}/blocks/{block.z}/{block.x}/{block.y}.json"


def imagery_of(layer: str) -> str:
    """The store's name for the imagery a layer's blocks were drawn from (one tile per map
    tile, written with the block), so viewers can lay the map over what the model saw."""
    return f"{layer}/imagery"


class TileStore(Protocol):
    """Reads and writes raise `app.errors.StoreUnavailable` when the store cannot be reached.
    The `*_async` reads are for the API's event loop: they never block it."""

    url: str  # where the tiles are, for logs and errors

    def get(self, layer: str, tile: Tile) -> StoredTile | None: ...
    async def get_async(self, layer: str, tile: Tile) -> StoredTile | None: ...
    def exists(self, layer: str, tile: Tile) -> bool: ...
    def has_block(self, block: Block) -> bool: ...
    async def has_block_async(self, block: Block) -> bool: ...
    def put_block(
        self, block: Block, tiles: list[bytes], meta: dict, imagery: list[bytes] | None = None
    ) -> None: ...
    def block_meta(self, block: Block) -> dict | None: ...
    def delete(self, layer: str, tile: Tile) -> bool: ...
    def tiles_in(self, layer: str, rect: TileRect) -> Iterator[Tile]:
        """The stored tiles inside a rectangle."""
        ...

    def delete_blocks(self, layer: str, areas: Iterable[TileRect]) -> Removed:
        """Remove whole blocks: for each rectangle of blocks (named by their parent tiles, as
        `Block` is), each block's metadata, then its four tiles and their imagery. Missing ones
        are skipped."""
        ...


class FileTileStore:
    """`{root}/{layer}/{z}/{x}/{y}.png` plus `{root}/{layer}/blocks/{z}/{x}/{y}.json`.

    Every file is written to a temp file in the same folder and renamed into place, so a reader
    (or a crash) never sees a partial tile. The block's metadata is written last: its presence
    means all four tiles are complete.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root)

    def tile_path(self, layer: str, tile: Tile) -> Path:
        return self.root / tile_key(layer, tile)

    def meta_path(self, block: Block) -> Path:
        return self.root / meta_key(block)

    def get(self, layer: str, tile: Tile) -> StoredTile | None:
        path = self.tile_path(layer, tile)
        try:
            with path.open("rb") as f:
                data = f.read()
                st = os.fstat(f.fileno())
        except FileNotFoundError:
            return None
        # mtime and size identify a tile version: tiles only change when truncated and regenerated.
        # nginx's form ("mtime in seconds-size" in hex): the nginx front serves hits from these
        # files with the same ETag, so a client's If-None-Match works through either path.
        return StoredTile(data, st.st_mtime, f'"{int(st.st_mtime):x}-{st.st_size:x}"')

    async def get_async(self, layer: str, tile: Tile) -> StoredTile | None:
        # A local read takes microseconds: cheaper in the loop than a hop to the thread pool.
        return self.get(layer, tile)

    def exists(self, layer: str, tile: Tile) -> bool:
        return self.tile_path(layer, tile).is_file()

    def has_block(self, block: Block) -> bool:
        return self.meta_path(block).is_file() and all(
            self.exists(block.layer, child) for child in block.children
        )

    async def has_block_async(self, block: Block) -> bool:
        return self.has_block(block)

    def put_block(
        self, block: Block, tiles: list[bytes], meta: dict, imagery: list[bytes] | None = None
    ) -> None:
        for child, data in zip(block.children, imagery or [], strict=False):
            write_atomic(self.tile_path(imagery_of(block.layer), child), data)
        for child, data in zip(block.children, tiles, strict=True):
            write_atomic(self.tile_path(block.layer, child), data)
        write_atomic(self.meta_path(block), json.dumps(meta, indent=1).encode())

    def block_meta(self, block: Block) -> dict | None:
        try:
            return json.loads(self.meta_path(block).read_bytes())
        except FileNotFoundError:
            return None

    def delete(self, layer: str, tile: Tile) -> bool:
        """Remove one tile and the metadata of the block it belongs to."""
        removed = _unlink(self.tile_path(layer, tile))
        if tile.z > 0:
            _unlink(self.meta_path(Block.of(layer, tile)))
        return removed

    def tiles_in(self, layer: str, rect: TileRect) -> Iterator[Tile]:
        """The stored tiles inside a rectangle, visiting only existing folders (an area can
        span far more tiles than were ever generated)."""
        folder = self.root / layer / str(rect.z)
        if not folder.is_dir():
            return
        for column in os.scandir(folder):
            if not (column.name.isdigit() and rect.x0 <= int(column.name) <= rect.x1):
                continue
            for entry in os.scandir(column.path):
                stem = entry.name.removesuffix(".png")
                if stem != entry.name and stem.isdigit() and rect.y0 <= int(stem) <= rect.y1:
                    yield Tile(int(column.name), int(stem), rect.z)

    def delete_blocks(self, layer: str, areas: Iterable[TileRect]) -> Removed:
        tiles = blocks = 0
        for parents in areas:
            # Metadata first: without it the block counts as missing and is regenerated on a miss.
            blocks += _remove_rect(self.root / layer / "blocks" / str(parents.z), parents, ".json")
            children = parents.descendants(parents.z + 1)
            tiles += _remove_rect(self.root / layer / str(children.z), children, ".png")
            _remove_rect(self.root / imagery_of(layer) / str(children.z), children, ".png")
        return Removed(tiles, blocks)


def _remove_rect(folder: Path, rect: TileRect, suffix: str) -> int:
    """Unlink `{folder}/{x}/{y}{suffix}` inside the rectangle, visiting only existing folders
    (an area can span far more tiles than were ever generated)."""
    if not folder.is_dir():
        return 0
    removed = 0
    for column in os.scandir(folder):
        if not (column.name.isdigit() and rect.x0 <= int(column.name) <= rect.x1):
            continue
        for entry in os.scandir(column.path):
            stem = entry.name.removesuffix(suffix)
            in_rect = stem != entry.name and stem.isdigit() and rect.y0 <= int(stem) <= rect.y1
            if in_rect and _unlink(Path(entry.path)):
                removed += 1
        with contextlib.suppress(OSError):
            os.rmdir(column.path)  # only succeeds when the column is now empty
    return removed


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename: readers and crashes see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _unlink(Path(tmp))
        raise


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def open_store(settings: Settings) -> TileStore:
    """The store MAPCASCADE_STORE names (`store_location`). An S3 store is checked here (one
    list request): bad settings stop start-up with a `StoreConfigError` instead of failing every
    request later."""
    location = store_location(settings)
    if isinstance(location, Path):
        return FileTileStore(location)
    from app.s3store import S3TileStore  # the S3 client loads only where it is used

    store = S3TileStore.from_settings(settings)
    store.check()
    return store
