"""Truncation: which blocks a bbox from a zoom down covers; the tile store removes them."""

from __future__ import annotations

import logging

from app.seeding.plan import BBox, tile_rect
from app.settings import Layer
from app.store import TileStore

log = logging.getLogger(__name__)


def truncate(store: TileStore, layer: Layer, bbox: BBox, minzoom: int) -> dict[str, int]:
    """Remove the tiles of the bbox at minzoom (widened to whole blocks) and all their
    descendants down to the layer's max zoom, with the blocks' metadata; returns the counts."""
    top = tile_rect(bbox, minzoom).whole_blocks()
    blocks = [top.descendants(z).parents() for z in range(minzoom, layer.max_zoom + 1)]
    removed = store.delete_blocks(layer.name, blocks)
    log.info("truncated %s of layer %s from %s at z%d down", removed, layer.name, bbox, minzoom)
    return {"tiles": removed.tiles, "blocks": removed.blocks}
