"""Seed planning: a request's bbox and zooms validated against the layer, and counted as tiles
and blocks (coarse zooms first) without enumerating them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import mercantile

from app.errors import InvalidRequest
from app.settings import MAX_LAT, Layer
from app.tiles import Block, TileRect

BBox = tuple[float, float, float, float]


def tile_rect(bbox: BBox, zoom: int) -> TileRect:
    """The tiles `mercantile.tiles` yields for the bbox, counted without enumerating them."""
    west, south, east, north = bbox
    ul = mercantile.tile(west, north, zoom)
    lr = mercantile.tile(east - mercantile.LL_EPSILON, south + mercantile.LL_EPSILON, zoom)
    return TileRect(zoom, ul.x, ul.y, lr.x, lr.y)


class AreaTiles:
    """The tiles of a bbox over a zoom range: shared by the seed and export plans (dataclasses
    that declare these three fields)."""

    bbox: BBox
    minzoom: int
    maxzoom: int

    @property
    def rects(self) -> list[TileRect]:
        return [tile_rect(self.bbox, z) for z in range(self.minzoom, self.maxzoom + 1)]

    @property
    def tiles(self) -> int:
        return sum(r.count for r in self.rects)


@dataclass(frozen=True)
class SeedPlan(AreaTiles):
    layer: str
    bbox: BBox  # already clipped to the layer's bounds
    minzoom: int
    maxzoom: int

    @property
    def blocks(self) -> int:
        return sum(r.parents().count for r in self.rects)

    def iter_blocks(self) -> Iterator[tuple[Block, int]]:
        """Each block with its tile count in the seed, coarse zooms first (parents first)."""
        for rect in self.rects:
            p = rect.parents()
            for y in range(p.y0, p.y1 + 1):
                for x in range(p.x0, p.x1 + 1):
                    block = Block(self.layer, p.z, x, y)
                    yield block, rect.overlap(block)


def check_area(layer: Layer, bbox: BBox, minzoom: int, maxzoom: int) -> BBox:
    """Validate a request's area and zooms against the layer; returns the bbox clipped to it."""
    west, south, east, north = bbox
    if not all(math.isfinite(v) for v in bbox):
        raise InvalidRequest("bbox values must be finite numbers")
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise InvalidRequest(f"longitudes must be within -180..180, got west={west}, east={east}")
    if not (-MAX_LAT <= south <= MAX_LAT and -MAX_LAT <= north <= MAX_LAT):
        raise InvalidRequest(
            f"latitudes must be within ±85.0511 (the Web Mercator limit), "
            f"got south={south}, north={north}"
        )
    if west >= east:
        raise InvalidRequest(
            f"bbox west ({west}) must be less than east ({east}); "
            "a bbox crossing the antimeridian is refused: split it in two"
        )
    if south >= north:
        raise InvalidRequest(f"bbox south ({south}) must be less than north ({north})")
    if minzoom > maxzoom:
        raise InvalidRequest(f"minzoom ({minzoom}) must not exceed maxzoom ({maxzoom})")
    if minzoom < layer.root_zoom or maxzoom > layer.max_zoom:
        raise InvalidRequest(
            f"zooms {minzoom}-{maxzoom} are outside layer {layer.name!r}, "
            f"which has zooms {layer.root_zoom}-{layer.max_zoom}"
        )
    lw, ls, le, ln = layer.bounds
    clipped = (max(west, lw), max(south, ls), min(east, le), min(north, ln))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise InvalidRequest(
            f"bbox {list(bbox)} does not intersect layer {layer.name!r}, "
            f"whose bounds are {list(layer.bounds)}"
        )
    return clipped


def plan_seed(layer: Layer, bbox: BBox, minzoom: int, maxzoom: int, max_tiles: int) -> SeedPlan:
    if layer.source is not None:
        raise InvalidRequest(
            f"layer {layer.name!r} is read-only (served from {layer.source.type} archive "
            f"{layer.source.path.name}): it is never generated"
        )
    plan = SeedPlan(layer.name, check_area(layer, bbox, minzoom, maxzoom), minzoom, maxzoom)
    check_tile_limit("seed", plan.tiles, max_tiles, "MAPCASCADE_MAX_SEED_TILES")
    return plan


def check_tile_limit(what: str, tiles: int, limit: int, setting: str) -> None:
    """Refuse a seed or export of more tiles than its setting allows."""
    if tiles > limit:
        raise InvalidRequest(
            f"the {what} covers {tiles} tiles, over the limit of {limit} tiles per {what} "
            f"({setting}): use a smaller bbox or fewer zooms",
            tiles=tiles,
            limit=limit,
        )
