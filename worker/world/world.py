"""A renderable world: features + spatial index + the lon/lat box where it has data; renders
truth maps, imagery and validity masks for any pixel window at zooms 12-19."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from app.tiles import TILE_SIZE
from worker.world import style as st
from worker.world.features import EARTH_HALF, Feature, FeatureIndex, lonlat_to_mercator
from worker.world.imagery_render import render_imagery
from worker.world.map_render import render_map
from worker.world.raster import Frame

log = logging.getLogger(__name__)

MIN_ZOOM, MAX_ZOOM = 12, 21  # z20-21: drone imagery; labels render there too
URBAN_GROUND = (140, 136, 126)  # paving and courtyards between mapped features
RURAL_GROUND = (124, 118, 96)  # dirt tracks between fields


@dataclass
class World:
    """Everything needed to render one place. `bbox` (W, S, E, N) bounds the data: pixels
    outside it are no-data (mask False, imagery alpha 0, map background)."""

    name: str
    features: list[Feature]
    bbox: tuple[float, float, float, float]
    lat0: float
    ground: tuple[int, int, int] = URBAN_GROUND
    index: FeatureIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = FeatureIndex(self.features)

    def restricted(self, name: str, bbox: tuple[float, float, float, float]) -> World:
        """The same world with a smaller data box (train/held-out parts); shares the index."""
        out = copy.copy(self)  # shallow: dataclasses.replace would rebuild the index
        out.name, out.bbox = name, bbox
        return out

    def frame(self, z: int, px0: int, py0: int, width: int, height: int) -> Frame:
        if not MIN_ZOOM <= z <= MAX_ZOOM:
            raise ValueError(f"world renders zooms {MIN_ZOOM}-{MAX_ZOOM}, not {z}")
        return Frame(z, px0, py0, width, height, lat0=self.lat0)

    def mask(self, z: int, px0: int, py0: int, width: int, height: int) -> np.ndarray:
        """(height, width) bool, True where the pixel centre lies inside the data box."""
        (x0, y0), (x1, y1) = lonlat_to_mercator(
            np.array([self.bbox[0], self.bbox[2]]), np.array([self.bbox[1], self.bbox[3]])
        )
        mpp = 2 * EARTH_HALF / (TILE_SIZE * 2**z)
        mx = (np.arange(px0, px0 + width) + 0.5) * mpp - EARTH_HALF
        my = EARTH_HALF - (np.arange(py0, py0 + height) + 0.5) * mpp
        return ((my >= y0) & (my <= y1))[:, None] & ((mx >= x0) & (mx <= x1))[None, :]

    def render_map(self, z: int, px0: int, py0: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 truth map; background colour where there is no data."""
        rgb = render_map(self.index, self.frame(z, px0, py0, width, height))
        rgb[~self.mask(z, px0, py0, width, height)] = st.BACKGROUND
        return rgb

    def render_imagery(
        self, z: int, px0: int, py0: int, width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, mask): imagery, black where there is no data, and the validity mask."""
        mask = self.mask(z, px0, py0, width, height)
        if not mask.any():  # nothing to see: skip the render entirely
            return np.zeros((height, width, 3), np.uint8), mask
        rgb = render_imagery(self.index, self.frame(z, px0, py0, width, height), self.ground)
        rgb[~mask] = 0
        return rgb, mask

    def map_tile(self, z: int, x: int, y: int) -> Image.Image:
        """256x256 RGB truth map tile."""
        return Image.fromarray(
            self.render_map(z, x * TILE_SIZE, y * TILE_SIZE, TILE_SIZE, TILE_SIZE)
        )

    def imagery_tile(self, z: int, x: int, y: int) -> Image.Image:
        """256x256 RGBA imagery tile; alpha 0 where there is no data."""
        rgb, mask = self.render_imagery(z, x * TILE_SIZE, y * TILE_SIZE, TILE_SIZE, TILE_SIZE)
        alpha = (mask * 255).astype(np.uint8)[..., None]
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA")
