"""Synthetic world with known ground truth: real OSM (Helsinki) and procedural towns rendered
as truth map tiles and imagery-like tiles at zooms 12-19 (see docs/world.md)."""

from worker.world.areas import AREAS, HELDOUT_SEEDS, TRAIN_SEEDS, Area, get_area, world_for
from worker.world.style import CLASS_COLOURS, CLASSES
from worker.world.world import World

__all__ = [
    "AREAS",
    "CLASSES",
    "CLASS_COLOURS",
    "HELDOUT_SEEDS",
    "TRAIN_SEEDS",
    "Area",
    "World",
    "get_area",
    "world_for",
]
