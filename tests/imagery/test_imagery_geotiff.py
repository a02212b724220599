"""GeoTIFF/COG source: Web Mercator blocks checked against an independent rasterio reprojection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mercantile
import numpy as np
import pytest
import rasterio
from imagery_fixtures import GEOTIFF
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject, transform_bounds

from app.imagery_config import parse_imagery_config
from worker.imagery import open_source
from worker.imagery.geotiff import GeoTIFFSource

# Tolerance: the reference warps the file with rasterio.warp.reproject directly, rio-tiler goes
# through a WarpedVRT; both sample pixel centres, so they may only disagree where a sample falls
# on a pixel edge. Allowed: at most 512 mask pixels (one canvas row) of 262,144, and colour
# differences on at most 1% of the pixels both call data.
MASK_TOLERANCE = 512
COLOUR_TOLERANCE = 0.01


def geotiff(path: Path = GEOTIFF, **extra: Any) -> GeoTIFFSource:
    source = open_source(parse_imagery_config({"type": "geotiff", "path": str(path), **extra}))
    assert isinstance(source, GeoTIFFSource)
    return source


def reference(
    z: int, x: int, y: int, resampling: Resampling = Resampling.nearest
) -> tuple[np.ndarray, np.ndarray]:
    """The block by hand: tile bounds from mercantile, reprojection of RGB + alpha (255 = data)."""
    west = mercantile.xy_bounds(x, y, z)
    east = mercantile.xy_bounds(x + 1, y + 1, z)
    transform = from_bounds(west.left, east.bottom, east.right, west.top, 512, 512)
    out = np.zeros((4, 512, 512), np.uint8)
    with rasterio.open(GEOTIFF) as ds:
        reproject(
            rasterio.band(ds, [1, 2, 3, 4]),
            out,
            dst_transform=transform,
            dst_crs="EPSG:3857",
            resampling=resampling,
        )
    return out[:3].transpose(1, 2, 0), out[3] == 255


def edge_block(z: int) -> tuple[int, int]:
    """The (even-aligned) block on the middle of the raster's west edge: part data, part not."""
    with rasterio.open(GEOTIFF) as ds:
        west, south, _, north = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    tile = mercantile.tile(west, (south + north) / 2, z)
    return tile.x & ~1, tile.y & ~1


@pytest.mark.parametrize("z", [18, 19, 20, 21])
def test_corner_block_matches_reprojection(z: int) -> None:
    x, y = edge_block(z)
    mosaic = geotiff(resampling="nearest").read(z, x, y)
    rgb, mask = reference(z, x, y)
    assert mosaic.rgb.shape == (512, 512, 3) and mosaic.rgb.dtype == np.uint8
    assert 0.05 < mask.mean() < 0.95, "the block straddles the raster's edge"
    assert np.count_nonzero(mosaic.mask != mask) <= MASK_TOLERANCE
    both = mosaic.mask & mask
    differ = np.any(mosaic.rgb[both] != rgb[both], axis=-1)
    assert differ.mean() <= COLOUR_TOLERANCE
    assert not mosaic.rgb[~mosaic.mask].any(), "outside the raster is transparent black"
    assert not mosaic.mask[:, 0].any(), "west of the raster there is no data"
    assert mosaic.overzoom == max(0, z - 19)


@pytest.mark.parametrize("z", [18, 21])
def test_default_bilinear_keeps_the_mask(z: int) -> None:
    x, y = edge_block(z)
    mosaic = geotiff().read(z, x, y)
    _, mask = reference(z, x, y)
    assert np.count_nonzero(mosaic.mask != mask) <= MASK_TOLERANCE
    # Colours against a bilinear reprojection, away from the edge where alpha gets blended.
    rgb, alpha = reference(z, x, y, Resampling.bilinear)
    both = mosaic.mask & alpha
    mean_difference = np.abs(mosaic.rgb[both].astype(int) - rgb[both]).mean()
    assert mean_difference < 2.0, "measured 1.2 at z18 and 0.2 at z21"


def test_native_max_zoom_and_overzoom() -> None:
    source = geotiff()
    # 0.35 m/px at 8.6 S: zoom 19 (0.295 m/px there) is the closest pyramid level.
    assert source.max_zoom == 19
    x, y = edge_block(21)
    assert source.read(21, x + 2, y + 2).overzoom == 2


def test_outside_the_raster_is_empty() -> None:
    x, y = edge_block(18)
    mosaic = geotiff().read(18, x - 4, y - 4)
    assert mosaic.empty and mosaic.rgb.shape == (512, 512, 3) and not mosaic.rgb.any()


def test_one_band_is_grey() -> None:
    x, y = edge_block(19)
    mosaic = geotiff(bands=[2], resampling="nearest").read(19, x, y)
    rgb, mask = reference(19, x, y)
    both = mosaic.mask & mask
    assert (mosaic.rgb[..., 0] == mosaic.rgb[..., 2]).all()
    assert np.mean(mosaic.rgb[both][:, 0] == rgb[both][:, 1]) > 1 - COLOUR_TOLERANCE


def test_sixteen_bit_with_nodata_override_and_rescale(tmp_path: Path) -> None:
    # A 16-bit single-band raster in EPSG:4326 whose zeros mean no data (the file says nothing).
    path = tmp_path / "dem16.tif"
    data = np.full((64, 64), 1000, np.uint16)
    data[:, :32] = 0
    bounds = (30.0, 0.0, 30.01, 0.01)
    profile = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint16",
                   crs="EPSG:4326", transform=from_bounds(*bounds, 64, 64))  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    with pytest.raises(ValueError, match="uint16 data: set rescale"):
        geotiff(path)
    source = geotiff(path, nodata=0, rescale=[0, 2000], resampling="nearest")
    tile = mercantile.tile(30.0075, 0.005, 16)
    mosaic = source.read(16, tile.x, tile.y, width=1, height=1)
    assert mosaic.mask.any() and not mosaic.mask.all()
    assert set(np.unique(mosaic.rgb[mosaic.mask])) == {128}, "1000 of 0..2000 -> 128"
    assert not mosaic.rgb[~mosaic.mask].any()
