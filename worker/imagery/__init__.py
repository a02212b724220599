"""Imagery sources: everything the worker reads under a block, behind one `ImagerySource` API."""

from __future__ import annotations

from app.imagery_config import (
    DirImageryConfig,
    GeoTIFFImageryConfig,
    ImageryConfig,
    WorldImageryConfig,
    XYZImageryConfig,
)
from worker.imagery.base import ImageryError, ImagerySource, Mosaic

__all__ = ["ImageryError", "ImagerySource", "Mosaic", "open_source"]


def open_source(config: ImageryConfig) -> ImagerySource:
    """The source for a layer's `imagery:` configuration. Imports are lazy so a worker pays
    (in start-up time and dependencies) only for the kind of imagery it serves."""
    if isinstance(config, XYZImageryConfig):
        from worker.imagery.xyz import XYZSource

        return XYZSource(config)
    if isinstance(config, DirImageryConfig):
        from worker.imagery.folder import FolderSource

        return FolderSource(config)
    if isinstance(config, GeoTIFFImageryConfig):
        from worker.imagery.geotiff import GeoTIFFSource

        return GeoTIFFSource(config)
    if isinstance(config, WorldImageryConfig):
        from worker.imagery.world import WorldSource  # type: ignore[import-not-found,unused-ignore]

        source: ImagerySource = WorldSource.from_config(config)
        return source
    raise TypeError(f"unknown imagery configuration {type(config).__name__}")
