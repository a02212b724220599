"""The cascade reference: the map one zoom up (2X, the parent) or two zooms up (4X, the
grandparent's quadrant), cut to a frame and upsampled bilinearly (as the official SCGM data code).

The one implementation: the worker and the evaluation harness cut a block's reference with
`reference_for`, the data set builder cuts its 512 px block and 256 px tile references with the
same code, so the model is trained on references made exactly as it is served them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from app.tiles import TILE_SIZE, Block, Tile, ancestor_of, parent_of
from model.request import BLOCK_SIZE

# Reads a generated (or, for training, true) map tile; None when it is not there.
MapTileReader = Callable[[Tile], Image.Image | None]
SPANS = (2, 4)  # child pixels per ancestor pixel: 2 the parent, 4 the grandparent


class MissingReference(RuntimeError):
    """The ancestor tile a block needs is not stored (its upstream block has not run)."""


@dataclass
class Reference:
    image: Image.Image | None  # RGB, the frame (a block: 512 + 2 * margin); None at the root
    span: int  # 0 (none), 2 (parent) or 4 (grandparent quadrant)
    tiles: list[Tile] = field(default_factory=list)  # the ancestor tiles it was cut from


def reference_for(
    block: Block, root_zoom: int, span: int, read: MapTileReader, margin: int = 0
) -> Reference:
    """A block's reference: grandparent quadrant (4X) where it exists, else parent (2X),
    upsampled to the block's frame; none at the root zoom."""
    child_zoom = block.child_zoom
    if span == 4 and child_zoom - 2 >= root_zoom:
        source = parent_of(block.parent)
    elif child_zoom - 1 >= root_zoom:
        span, source = 2, block.parent
    else:
        return Reference(None, 0)
    origin = (block.x * BLOCK_SIZE - margin, block.y * BLOCK_SIZE - margin)
    return cut_reference(source, span, origin, BLOCK_SIZE + 2 * margin, read)


def tile_reference(tile: Tile, span: int, read: MapTileReader) -> Reference:
    """One tile's reference (256 px): the part of its ancestor `span` covering it, upsampled
    (the CSCMG data set's `ref_scale_{span}_256/`)."""
    if span not in SPANS:
        raise ValueError(f"span must be 2 or 4, got {span!r}")
    source = ancestor_of(tile, tile.z - span // 2)
    return cut_reference(source, span, (tile.x * TILE_SIZE, tile.y * TILE_SIZE), TILE_SIZE, read)


def cut_reference(
    source: Tile, span: int, origin: tuple[int, int], size: int, read: MapTileReader
) -> Reference:
    """The square frame of `size` px at `origin` (global pixels of zoom source.z + span // 2),
    cut from `source` at 1/span of the resolution and upsampled. Where the frame reaches past
    the source, its neighbours are read; one not generated yet (or off the grid) is the
    source's edge repeated."""
    image = read(source)
    if image is None:
        raise MissingReference(f"reference tile {source.z}/{source.x}/{source.y} is not stored")
    t = TILE_SIZE
    # The source and its 8 neighbours as one canvas; the frame in its pixels (span child
    # pixels per source pixel), the canvas starting one tile up and left of the source.
    canvas = np.pad(np.asarray(image.convert("RGB")), ((t, t), (t, t), (0, 0)), mode="edge")
    left = origin[0] // span - (source.x - 1) * t
    top = origin[1] // span - (source.y - 1) * t
    side = size // span
    used = [source]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            x, y = source.x + dx, source.y + dy
            col, row = (dx + 1) * t, (dy + 1) * t
            touched = left < col + t and col < left + side and top < row + t and row < top + side
            if (dx or dy) and touched and 0 <= x < (1 << source.z) and 0 <= y < (1 << source.z):
                neighbour = read(Tile(x, y, source.z))
                if neighbour is not None:
                    canvas[row : row + t, col : col + t] = np.asarray(neighbour.convert("RGB"))
                    used.append(Tile(x, y, source.z))
    window = Image.fromarray(canvas).crop((left, top, left + side, top + side))
    return Reference(window.resize((size, size), Image.Resampling.BILINEAR), span, used)
