"""Truncation: which blocks a bbox from a zoom down covers; the tile store removes them."""

from __future__ import annotations

import logging

from app.cascade import BlockQueue
from app.seeding.plan import BBox, tile_rect
from app.settings import Layer
from app.tiles import Block

log = logging.getLogger(__name__)


def truncate(cascade: BlockQueue, layer: Layer, bbox: BBox, minzoom: int) -> dict[str, int]:
    """Remove the tiles of the bbox at minzoom (widened to whole blocks) and all their
    descendants down to the layer's max zoom, with the blocks' metadata, then re-plan the
    queued blocks among them (a seed racing the truncate still ends done); returns the counts."""
    top = tile_rect(bbox, minzoom).whole_blocks()
    blocks = [top.descendants(z).parents() for z in range(minzoom, layer.max_zoom + 1)]
    rects = {r.z: r for r in blocks}  # blocks are named by their parent tile, one zoom up
    removed = cascade.store.delete_blocks(layer.name, blocks)
    log.info("truncated %s of layer %s from %s at z%d down", removed, layer.name, bbox, minzoom)

    def inside(block: Block) -> bool:
        r = rects.get(block.z)
        return r is not None and r.x0 <= block.x <= r.x1 and r.y0 <= block.y <= r.y1

    replanned = cascade.replan(layer, inside)
    return {"tiles": removed.tiles, "blocks": removed.blocks, "replanned": replanned}
