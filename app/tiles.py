"""Tile math of the quadtree cascade: tiles, blocks (the 2x2 children of a parent), ancestors,
rectangles of tiles."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import mercantile


class Tile(NamedTuple):
    """An XYZ tile; field order as mercantile's, so the two mix freely."""

    x: int
    y: int
    z: int


MAX_ZOOM = 30
TILE_SIZE = 256
# A tile number written plainly: canonical (no sign, no leading zero, no ".0") and short (x < 2^24
# has 8 digits). Such URLs take the fast path of the tile route and are what nginx may serve.
PLAIN_TILE_NUMBER = "0|[1-9][0-9]{0,9}"


class TileOutOfRange(ValueError):
    """x or y outside 0..2^z-1, or a zoom no pyramid has."""


def check_tile(z: int, x: int, y: int) -> Tile:
    if not 0 <= z <= MAX_ZOOM:
        raise TileOutOfRange(f"zoom {z} is outside 0..{MAX_ZOOM}")
    n = 1 << z
    if not (0 <= x < n and 0 <= y < n):
        raise TileOutOfRange(f"tile {z}/{x}/{y} does not exist: x and y must be in 0..{n - 1}")
    return Tile(x, y, z)


def parent_of(tile: Tile) -> Tile:
    return Tile(tile.x >> 1, tile.y >> 1, tile.z - 1)


def ancestor_of(tile: Tile, zoom: int) -> Tile:
    shift = tile.z - zoom
    return Tile(tile.x >> shift, tile.y >> shift, zoom)


@dataclass(frozen=True, order=True)
class Block:
    """The unit of work: the four children (at z+1) of the parent tile (z, x, y) of one layer."""

    layer: str
    z: int
    x: int
    y: int

    @classmethod
    def of(cls, layer: str, tile: Tile) -> Block:
        """The block that renders `tile`: the one keyed by its parent."""
        p = parent_of(tile)
        return cls(layer, p.z, p.x, p.y)

    @property
    def parent(self) -> Tile:
        return Tile(self.x, self.y, self.z)

    @property
    def child_zoom(self) -> int:
        return self.z + 1

    @property
    def children(self) -> list[Tile]:
        """Children in canvas order: top-left, top-right, bottom-left, bottom-right."""
        x, y, z = 2 * self.x, 2 * self.y, self.z + 1
        return [Tile(x, y, z), Tile(x + 1, y, z), Tile(x, y + 1, z), Tile(x + 1, y + 1, z)]

    @property
    def key(self) -> str:
        return f"{self.layer}:{self.z}:{self.x}:{self.y}"

    def upstream(self) -> Block:
        """The block that renders this block's parent tile (its cascade predecessor)."""
        return Block.of(self.layer, self.parent)

    def noise_seed(self, model_id: str) -> int:
        """The seed of the layer's noise, the same for all its blocks: the noise is drawn per
        world tile from it (model.pipeline.anchored_noise), so neighbouring blocks share it
        where their frames overlap, and a regenerated block gives the same tiles."""
        digest = hashlib.sha256(f"{self.layer}:{model_id}".encode()).digest()
        return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class TileRect:
    """The tiles x0..x1, y0..y1 (inclusive) of zoom z."""

    z: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def count(self) -> int:
        return (self.x1 - self.x0 + 1) * (self.y1 - self.y0 + 1)

    def parents(self) -> TileRect:
        return TileRect(self.z - 1, self.x0 >> 1, self.y0 >> 1, self.x1 >> 1, self.y1 >> 1)

    def descendants(self, zoom: int) -> TileRect:
        d = zoom - self.z
        return TileRect(
            zoom, self.x0 << d, self.y0 << d, ((self.x1 + 1) << d) - 1, ((self.y1 + 1) << d) - 1
        )

    def whole_blocks(self) -> TileRect:
        """Widened to whole sibling quads: the store writes and regenerates blocks, not tiles."""
        return TileRect(self.z, self.x0 & ~1, self.y0 & ~1, self.x1 | 1, self.y1 | 1)

    def overlap(self, block: Block) -> int:
        """How many of the block's four children lie in this rectangle."""
        cx = min(2 * block.x + 1, self.x1) - max(2 * block.x, self.x0) + 1
        cy = min(2 * block.y + 1, self.y1) - max(2 * block.y, self.y0) + 1
        return max(cx, 0) * max(cy, 0)


def intersects(tile: Tile, bbox: tuple[float, float, float, float]) -> bool:
    b = mercantile.bounds(tile)
    west, south, east, north = bbox
    return b.west < east and b.east > west and b.south < north and b.north > south
