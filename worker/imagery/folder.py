"""Imagery from a local tile folder `{z}/{x}/{y}.{png,jpg,jpeg,webp}` (XYZ or TMS rows)."""

from __future__ import annotations

import logging
from pathlib import Path

from app.imagery_config import DirImageryConfig, zoom_levels
from worker.imagery.base import (
    ImageryError,
    Mosaic,
    TileCoord,
    TileImage,
    decode_tile,
    read_pyramid,
)

logger = logging.getLogger(__name__)


class FolderSource:
    """Reads blocks from a tile tree on disk; a missing file is no data, not an error."""

    def __init__(self, config: DirImageryConfig) -> None:
        self.root = Path(config.path)
        self.tms = config.scheme == "tms"
        self.extensions = config.extensions
        levels = zoom_levels(self.root)
        # Deeper blocks are upsampled from the deepest level the folder holds.
        self.max_zoom = (
            config.max_zoom if config.max_zoom is not None else (levels[-1] if levels else None)
        )
        logger.info(
            "tile folder %s: zooms %s, max zoom %s, %s rows",
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
        tiles: dict[TileCoord, TileImage | None] = {}
        for tx, ty in coords:
            path = self.tile_path(z, tx, ty)
            if path is None:
                tiles[(tx, ty)] = None
                continue
            try:
                tiles[(tx, ty)] = decode_tile(path.read_bytes())
            except (OSError, ValueError) as exc:
                # PIL's UnidentifiedImageError is an OSError: a corrupt file, not a missing one.
                raise ImageryError(f"cannot read tile {z}/{tx}/{ty} from {path}: {exc}") from exc
        return tiles
