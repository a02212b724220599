"""Imagery from a local tile folder `{z}/{x}/{y}.{png,jpg,jpeg,webp}` (XYZ or TMS rows).

Drone pipelines often write one zoom only, or shallow levels with gaps: a tile the folder lacks
is built from the deeper levels by 2x2 averaging, level by level, as a COG's overviews are
(kept in memory, so neighbouring blocks reuse them); zooms past the deepest overzoom."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

from app.imagery_config import DirImageryConfig, zoom_levels
from worker.imagery.base import (
    TILE_SIZE,
    ImageryError,
    Mosaic,
    TileCoord,
    TileImage,
    decode_tile,
    read_pyramid,
)

logger = logging.getLogger(__name__)

# Overviews reach this many zooms above the deepest level (a tile there averages up to 4^5
# files); shallower zooms have no data: that many files per tile would be too slow to read.
OVERVIEW_LEVELS = 5


class FolderSource:
    """Reads blocks from a tile tree on disk; a missing file is no data, not an error."""

    def __init__(self, config: DirImageryConfig) -> None:
        self.root = Path(config.path)
        self.tms = config.scheme == "tms"
        self.extensions = config.extensions
        levels = zoom_levels(self.root)
        # Tiles missing from a level are averaged from the levels below, down to the deepest.
        self.deepest = levels[-1] if levels else None
        self.columns = {z: _columns(self.root / str(z)) for z in levels}
        self._overview = lru_cache(maxsize=1024)(self._build_overview)
        # Deeper blocks are upsampled from the deepest level the folder holds.
        self.max_zoom = (
            config.max_zoom if config.max_zoom is not None else (levels[-1] if levels else None)
        )
        logger.info(
            "tile folder %s: zooms %s (shallower ones averaged), max zoom %s, %s rows",
            self.root,
            levels,
            self.max_zoom,
            config.scheme,
        )

    def read(self, z: int, x: int, y: int, width: int = 2, height: int = 2) -> Mosaic:
        return read_pyramid(self._fetch, self.max_zoom, z, x, y, width, height)

    def close(self) -> None:
        """Nothing to release: files are opened and closed per tile."""

    def tile_path(self, z: int, x: int, y: int) -> Path | None:
        """The file holding tile z/x/y (XYZ row), or None when the folder has none."""
        row = (1 << z) - 1 - y if self.tms else y
        for extension in self.extensions:
            path = self.root / str(z) / str(x) / f"{row}.{extension}"
            if path.is_file():
                return path
        return None

    def _fetch(self, z: int, coords: list[TileCoord]) -> dict[TileCoord, TileImage | None]:
        return {(tx, ty): self._tile(z, tx, ty) for tx, ty in coords}

    def _tile(self, z: int, x: int, y: int) -> TileImage | None:
        """The file's tile; where the folder has none, the average of its four children
        (recursively, up to OVERVIEW_LEVELS above the deepest level); None without data."""
        path = self.tile_path(z, x, y)
        if path is not None:
            try:
                return decode_tile(path.read_bytes())
            except (OSError, ValueError) as exc:
                # PIL's UnidentifiedImageError is an OSError: a corrupt file, not a missing one.
                raise ImageryError(f"cannot read tile {z}/{x}/{y} from {path}: {exc}") from exc
        if self.deepest is None or not 0 < self.deepest - z <= OVERVIEW_LEVELS:
            return None
        # Columns below x at each deeper level: skip the recursion where no file can be.
        if not any(c >> (d - z) == x for d, cols in self.columns.items() if d > z for c in cols):
            return None
        return self._overview(z, x, y)

    def _build_overview(self, z: int, x: int, y: int) -> TileImage | None:
        kids = self._fetch(z + 1, [(2 * x + dx, 2 * y + dy) for dy in (0, 1) for dx in (0, 1)])
        if all(tile is None for tile in kids.values()):
            return None
        side = 2 * TILE_SIZE
        rgb = np.zeros((side, side, 3), np.float32)
        weight = np.zeros((side, side), np.float32)
        for (tx, ty), tile in kids.items():
            if tile is not None:
                rows = slice((ty - 2 * y) * TILE_SIZE, (ty - 2 * y + 1) * TILE_SIZE)
                cols = slice((tx - 2 * x) * TILE_SIZE, (tx - 2 * x + 1) * TILE_SIZE)
                rgb[rows, cols] = tile[0] * tile[1][..., None]
                weight[rows, cols] = tile[1]
        # Mean over the valid pixels of each 2x2 cell; a cell is data when half of it is.
        colour = rgb.reshape(TILE_SIZE, 2, TILE_SIZE, 2, 3).sum(axis=(1, 3))
        count = weight.reshape(TILE_SIZE, 2, TILE_SIZE, 2).sum(axis=(1, 3))
        mask = count >= 2
        out = np.rint(colour / np.maximum(count, 1)[..., None]).astype(np.uint8)
        out[~mask] = 0
        return out, mask


def _columns(level: Path) -> set[int]:
    try:
        return {int(p.name) for p in level.iterdir() if p.name.isdigit()}
    except OSError:
        return set()
