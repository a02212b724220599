"""Imagery from a GeoTIFF or COG in any CRS, warped to Web Mercator by rio-tiler.

A block is read in one call over its whole extent, so the four tiles share one resampling grid
and meet without seams.
"""

from __future__ import annotations

import logging
import warnings

import mercantile
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rio_tiler.errors import RioTilerError
from rio_tiler.io.rasterio import Reader

from app.imagery_config import GeoTIFFImageryConfig
from worker.imagery.base import TILE_SIZE, ImageryError, Mosaic, check_block

logger = logging.getLogger(__name__)

WEB_MERCATOR = CRS.from_epsg(3857)
WGS84 = CRS.from_epsg(4326)
# GDAL settings that spare a COG on a server from directory listings and tiny range requests.
REMOTE_ENV = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_TIMEOUT": "30",
}

Bounds = tuple[float, float, float, float]


def block_bounds(z: int, x: int, y: int, width: int, height: int) -> Bounds:
    """Web Mercator (left, bottom, right, top) of tiles x..x+width-1, y..y+height-1."""
    north_west = mercantile.xy_bounds(mercantile.Tile(x, y, z))
    south_east = mercantile.xy_bounds(mercantile.Tile(x + width - 1, y + height - 1, z))
    return (north_west.left, south_east.bottom, south_east.right, north_west.top)


class GeoTIFFSource:
    """Reads blocks from one raster file; the file is opened per read (fork-safe, and GDAL's
    block cache keeps re-opening cheap)."""

    def __init__(self, config: GeoTIFFImageryConfig) -> None:
        self.config = config
        self.path = config.path
        self.env = REMOTE_ENV if config.is_remote else {}
        try:
            with rasterio.Env(**self.env), self._open() as reader:
                west, south, east, north = reader.get_geographic_bounds(WGS84)
                self.max_zoom = int(reader.maxzoom)
                count = reader.dataset.count
        except (RasterioError, RioTilerError) as exc:
            raise ImageryError(f"cannot open GeoTIFF {self.path}: {exc}") from exc
        # Web Mercator stops at +-85.05 degrees; clamp so polar rasters still get bounds.
        left, bottom = mercantile.xy(west, max(south, -85.05))
        right, top = mercantile.xy(east, min(north, 85.05))
        self.bounds: Bounds = (left, bottom, right, top)
        self.indexes = config.bands or ((1, 2, 3) if count >= 3 else (1,))
        logger.info(
            "GeoTIFF %s: bands %s, native max zoom %d, lon %.5f..%.5f lat %.5f..%.5f",
            self.path,
            self.indexes,
            self.max_zoom,
            west,
            east,
            south,
            north,
        )

    def read(self, z: int, x: int, y: int, width: int = 2, height: int = 2) -> Mosaic:
        check_block(z, x, y, width, height)
        overzoom = max(0, z - self.max_zoom)
        size = (width * TILE_SIZE, height * TILE_SIZE)
        bounds = block_bounds(z, x, y, width, height)
        if not _intersects(bounds, self.bounds):
            return Mosaic.blank(*size, overzoom=overzoom)
        try:
            with rasterio.Env(**self.env), self._open() as reader:
                image = reader.part(
                    bounds,
                    dst_crs=WEB_MERCATOR,
                    bounds_crs=WEB_MERCATOR,
                    width=size[0],
                    height=size[1],
                    indexes=self.indexes,
                    nodata=self.config.nodata,
                    resampling_method=self.config.resampling,
                    reproject_method=self.config.resampling,
                )
        except (RasterioError, RioTilerError) as exc:
            raise ImageryError(f"cannot read block {z}/{x}/{y} from {self.path}: {exc}") from exc
        mask = np.asarray(image.mask) > 0
        rgb = self._to_rgb(np.asarray(image.data))
        rgb[~mask] = 0
        return Mosaic(rgb=rgb, mask=mask, overzoom=overzoom)

    def close(self) -> None:
        """Nothing held between reads."""

    def _open(self) -> Reader:
        with warnings.catch_warnings():
            # Missing overviews are normal for drone orthos; rio-tiler warns on every open.
            warnings.simplefilter("ignore")
            return Reader(self.path)

    def _to_rgb(self, data: np.ndarray) -> np.ndarray:
        """(bands, H, W) of any dtype -> (H, W, 3) uint8, a single band repeated as grey."""
        if self.config.rescale is not None:
            low, high = self.config.rescale
            scaled = (data.astype(np.float32) - low) * (255.0 / (high - low))
            data = np.clip(np.rint(scaled), 0, 255)
        pixels = np.moveaxis(data.astype(np.uint8, copy=False), 0, -1)
        if pixels.shape[-1] == 1:
            pixels = np.repeat(pixels, 3, axis=-1)
        return np.ascontiguousarray(pixels)


def _intersects(a: Bounds, b: Bounds) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
