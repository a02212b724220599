"""Pre-seeding and truncation: a bbox over a zoom range as blocks, enqueued top-down, with its
progress kept in Redis.

`plan` validates and counts the area, `progress` keeps a seed's counters in Redis (and listens to
finished block jobs), `runner` creates, enqueues and cancels seeds, and `truncation` picks the
blocks of an area for the tile store to remove.
"""

from app.seeding.plan import BBox, SeedPlan, check_area, plan_seed, tile_rect
from app.seeding.progress import active_seeds, describe
from app.seeding.runner import SeedRunner, Seeds
from app.seeding.truncation import truncate
from app.tiles import TileRect

__all__ = [
    "BBox",
    "SeedPlan",
    "SeedRunner",
    "Seeds",
    "TileRect",
    "active_seeds",
    "check_area",
    "describe",
    "plan_seed",
    "tile_rect",
    "truncate",
]
