"""Imagery from the synthetic world (`imagery: {type: world, area: helsinki}` or `seed: N`):
rendered on demand, with the validity mask of the area's data box."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.imagery.base import TILE_SIZE, Mosaic, TileImage, check_block, read_pyramid
from worker.world import World, world_for
from worker.world.world import MAX_ZOOM

if TYPE_CHECKING:
    from app.imagery_config import WorldImageryConfig


class WorldSource:
    """An `ImagerySource` over a world area; the render is one pass over the whole block, so the
    tiles inside it join exactly as neighbouring blocks do (global pixel coordinates)."""

    def __init__(self, world: World) -> None:
        self.world = world

    @classmethod
    def from_area(cls, area: str) -> WorldSource:
        """`area` is a name from worker.world.areas or `seed:N`."""
        return cls(world_for(area))

    @classmethod
    def from_config(cls, config: WorldImageryConfig) -> WorldSource:
        return cls.from_area(config.area if config.area is not None else f"seed:{config.seed}")

    def read(self, z: int, x: int, y: int, width: int = 2, height: int = 2) -> Mosaic:
        check_block(z, x, y, width, height)
        w, h = width * TILE_SIZE, height * TILE_SIZE
        if z < 12:  # below the renderer's zooms the world is too small to matter: no data
            return Mosaic.blank(w, h)
        # Beyond the deepest rendered zoom, read the deepest one and say so, like a real source.
        over = max(0, z - MAX_ZOOM)
        if over:

            def fetch(zoom: int, coords: list[tuple[int, int]]) -> dict:
                out: dict[tuple[int, int], TileImage | None] = {}
                for tx, ty in coords:
                    m = self.read(zoom, tx, ty, 1, 1)
                    out[(tx, ty)] = (m.rgb, m.mask) if m.mask.any() else None
                return out

            return read_pyramid(fetch, MAX_ZOOM, z, x, y, width, height)
        rgb, mask = self.world.render_imagery(z, x * TILE_SIZE, y * TILE_SIZE, w, h)
        return Mosaic(rgb=rgb, mask=mask)

    def close(self) -> None:
        """Nothing to release: worlds are cached per process and shared."""
