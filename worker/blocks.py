"""One block, start to finish, as the service renders it: imagery + cascade reference -> 4 tiles.

Shared by the RQ job (`worker.jobs`) and the evaluation harness, so both cascade identically.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import mercantile
import numpy as np
from PIL import Image

from app.store import TileStore
from app.tiles import TILE_SIZE, Block, Tile, parent_of
from model import BlockRequest, ScaleInfo, prepare_reference
from worker.imagery.base import Mosaic

# Reads a generated map tile from the store; None when it is not there.
MapTileReader = Callable[[Tile], Image.Image | None]


class MissingReference(RuntimeError):
    """The ancestor tile a block needs is not stored (its upstream block has not run)."""


@dataclass
class Reference:
    image: Image.Image | None  # 512x512 RGB in the block frame; None at the root zoom
    span: int  # 0 (none), 2 (parent) or 4 (grandparent quadrant)
    tiles: list[Tile] = field(default_factory=list)  # the ancestor tiles it was cut from


def store_reader(store: TileStore, layer: str) -> MapTileReader:
    def read(tile: Tile) -> Image.Image | None:
        stored = store.get(layer, tile)
        return None if stored is None else Image.open(io.BytesIO(stored.data))

    return read


def reference_for(block: Block, root_zoom: int, span: int, read: MapTileReader) -> Reference:
    """The cascade reference: grandparent quadrant (4X) where it exists, else parent (2X)."""
    child_zoom = block.child_zoom
    if span == 4 and child_zoom - 2 >= root_zoom:
        source, quadrant = parent_of(block.parent), (block.x & 1, block.y & 1)
    elif child_zoom - 1 >= root_zoom:
        span, source, quadrant = 2, block.parent, None
    else:
        return Reference(None, 0)
    image = read(source)
    if image is None:
        raise MissingReference(f"reference tile {source.z}/{source.x}/{source.y} is not stored")
    return Reference(prepare_reference(image.convert("RGB"), span, quadrant), span, [source])


def block_request(block: Block, imagery: Mosaic, reference: Reference, seed: int) -> BlockRequest:
    zoom = block.child_zoom
    lat = mercantile.ul(block.x + 0.5, block.y + 0.5, block.z).lat  # centre of the block
    scale = ScaleInfo(
        zoom=zoom,
        lat=lat,
        ref_zoom=zoom - reference.span // 2 if reference.span else None,
        span=reference.span,
    )
    return BlockRequest(
        imagery=Image.fromarray(imagery.rgb, "RGB"),
        reference=reference.image,
        scale=scale,
        seed=seed,
    )


def cut_block(canvas: Image.Image, mask: np.ndarray | None = None) -> list[Image.Image]:
    """The 512x512 canvas as four RGBA tiles in `Block.children` order; no-data is transparent."""
    rgba = canvas.convert("RGBA")
    if mask is not None:
        rgba.putalpha(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L"))
    boxes = [(0, 0), (TILE_SIZE, 0), (0, TILE_SIZE), (TILE_SIZE, TILE_SIZE)]
    return [rgba.crop((x, y, x + TILE_SIZE, y + TILE_SIZE)) for x, y in boxes]


def blank_block() -> list[Image.Image]:
    return [Image.new("RGBA", (TILE_SIZE, TILE_SIZE), (0, 0, 0, 0)) for _ in range(4)]


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def blocks_covering(
    layer: str, bbox: tuple[float, float, float, float], child_zoom: int
) -> list[Block]:
    """Blocks whose children at `child_zoom` cover the bbox, ordered row by row."""
    parents = {parent_of(t) for t in mercantile.tiles(*bbox, zooms=[child_zoom])}
    return sorted((Block(layer, p.z, p.x, p.y) for p in parents), key=lambda b: (b.y, b.x))
