"""The imagery contract (Mosaic, ImagerySource, ImageryError) and the mosaic assembly shared by
the tile-pyramid sources (XYZ services and tile folders), overzoom included.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from app.tiles import MAX_ZOOM, TILE_SIZE

logger = logging.getLogger(__name__)

# One decoded tile: rgb (256, 256, 3) uint8 and mask (256, 256) bool; None = no tile there.
TileImage = tuple[np.ndarray, np.ndarray]
TileCoord = tuple[int, int]
# Fetches tiles (x, y) of one zoom of a pyramid: (zoom, coords) -> {coord: tile or None}.
TileFetcher = Callable[[int, list[TileCoord]], dict[TileCoord, TileImage | None]]


@dataclass
class Mosaic:
    """The imagery under a block of tiles, north up, Web Mercator, 256 px per tile."""

    rgb: np.ndarray  # (H, W, 3) uint8; 0 where mask is False
    mask: np.ndarray  # (H, W) bool, True where there is data
    overzoom: int = 0  # levels upsampled beyond the source's native max zoom

    @property
    def empty(self) -> bool:
        """No valid pixel at all: the job writes transparent no-data tiles, never invents any."""
        return not bool(self.mask.any())

    @classmethod
    def blank(cls, width_px: int, height_px: int, overzoom: int = 0) -> Mosaic:
        return cls(
            rgb=np.zeros((height_px, width_px, 3), np.uint8),
            mask=np.zeros((height_px, width_px), bool),
            overzoom=overzoom,
        )


@runtime_checkable
class ImagerySource(Protocol):
    def read(self, z: int, x: int, y: int, width: int = 2, height: int = 2) -> Mosaic:
        """Tiles x..x+width-1, y..y+height-1 at zoom z (XYZ rows), 256 px each, as one mosaic."""
        ...

    def close(self) -> None: ...


class ImageryError(Exception):
    """A fetch or read failed (transient or permanent); the job retries later."""


def check_block(z: int, x: int, y: int, width: int, height: int) -> None:
    """Reject a block that does not lie inside the zoom's tile grid (a caller bug, not bad data)."""
    if not 0 <= z <= MAX_ZOOM:
        raise ValueError(f"zoom {z} is outside 0..{MAX_ZOOM}")
    if width < 1 or height < 1:
        raise ValueError(f"block size must be at least 1x1 tiles (got {width}x{height})")
    n = 1 << z
    if not (x >= 0 and y >= 0 and x + width <= n and y + height <= n):
        raise ValueError(
            f"block {z}/{x}/{y} of {width}x{height} tiles leaves the zoom {z} grid (0..{n - 1})"
        )


def decode_tile(data: bytes) -> TileImage:
    """A PNG/JPEG/WebP tile as (rgb, mask); alpha (or a transparent palette entry) -> mask.

    Tiles of another square size (512 px "retina" services) are resized to 256 px.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        rgba = image.convert("RGBA") if has_alpha else image.convert("RGB")
    if rgba.size != (TILE_SIZE, TILE_SIZE):
        if rgba.width != rgba.height:
            raise ValueError(f"tile is {rgba.width}x{rgba.height} px, not square")
        rgba = rgba.resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BOX)
    array = np.asarray(rgba)
    rgb = np.ascontiguousarray(array[..., :3])
    if has_alpha:
        mask = array[..., 3] > 0
        rgb[~mask] = 0
    else:
        mask = np.ones((TILE_SIZE, TILE_SIZE), bool)
    return rgb, mask


def stitch(
    tiles: dict[TileCoord, TileImage | None], xs: Iterable[int], ys: Iterable[int]
) -> Mosaic:
    """Place tiles on one canvas, columns xs and rows ys (north first); missing ones stay empty."""
    xs, ys = list(xs), list(ys)
    mosaic = Mosaic.blank(len(xs) * TILE_SIZE, len(ys) * TILE_SIZE)
    for row, ty in enumerate(ys):
        for col, tx in enumerate(xs):
            tile = tiles.get((tx, ty))
            if tile is None:
                continue
            window = np.s_[
                row * TILE_SIZE : (row + 1) * TILE_SIZE, col * TILE_SIZE : (col + 1) * TILE_SIZE
            ]
            mosaic.rgb[window] = tile[0]
            mosaic.mask[window] = tile[1]
    return mosaic


def upsample(
    source: Mosaic, box: tuple[float, float, float, float], size: tuple[int, int]
) -> Mosaic:
    """Resample the pixel box (left, top, right, bottom) of `source` to `size` (width, height).

    Colours are bilinear, weighted by the mask (normalized convolution), so data pixels next to
    a hole do not darken with the hole's zeros; the mask is nearest, so no data is invented.
    """
    weight = Image.fromarray(source.mask.astype(np.float32))
    weight_up = np.asarray(weight.resize(size, Image.Resampling.BILINEAR, box=box))
    mask = (
        np.asarray(
            Image.fromarray(source.mask.astype(np.uint8) * 255).resize(
                size, Image.Resampling.NEAREST, box=box
            )
        )
        > 0
    )
    rgb = np.zeros((size[1], size[0], 3), np.uint8)
    safe = np.where(weight_up > 1e-6, weight_up, 1.0)
    for band in range(3):
        channel = Image.fromarray(source.rgb[..., band].astype(np.float32))
        up = np.asarray(channel.resize(size, Image.Resampling.BILINEAR, box=box))
        rgb[..., band] = np.clip(np.rint(up / safe), 0, 255).astype(np.uint8)
    rgb[~mask] = 0
    return Mosaic(rgb=rgb, mask=mask)


def read_pyramid(
    fetch: TileFetcher,
    max_zoom: int | None,
    z: int,
    x: int,
    y: int,
    width: int = 2,
    height: int = 2,
) -> Mosaic:
    """A block from a tile pyramid; beyond `max_zoom` it is cut from the deepest level and
    upsampled, with `overzoom` saying by how many levels."""
    check_block(z, x, y, width, height)
    levels = 0 if max_zoom is None or z <= max_zoom else z - max_zoom
    source_z = z - levels
    xs = range(x >> levels, ((x + width - 1) >> levels) + 1)
    ys = range(y >> levels, ((y + height - 1) >> levels) + 1)
    tiles = fetch(source_z, [(tx, ty) for ty in ys for tx in xs])
    canvas = stitch(tiles, xs, ys)
    if levels == 0:
        return canvas
    size = (width * TILE_SIZE, height * TILE_SIZE)
    if canvas.empty:
        return Mosaic.blank(*size, overzoom=levels)
    # The block's pixel box on the source canvas: 2**levels block pixels per source pixel.
    scale = TILE_SIZE / (1 << levels)
    left = x * scale - xs[0] * TILE_SIZE
    top = y * scale - ys[0] * TILE_SIZE
    box = (left, top, left + width * scale, top + height * scale)
    logger.debug("overzoom %d/%d/%d: %d level(s) from zoom %d", z, x, y, levels, source_z)
    mosaic = upsample(canvas, box, size)
    mosaic.overzoom = levels
    return mosaic
