"""One block, start to finish, as the service renders it: imagery + cascade reference -> 4 tiles.

Shared by the RQ job (`worker.jobs`) and the evaluation harness, so both cascade identically.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import mercantile
import numpy as np
from PIL import Image

from app.store import TileStore
from app.tiles import TILE_SIZE, Block, Tile, parent_of
from model import BlockRequest, Generator, ScaleInfo
from model.reference import BLOCK_SIZE
from worker.imagery.base import ImagerySource, Mosaic

# Reads a generated map tile from the store; None when it is not there.
MapTileReader = Callable[[Tile], Image.Image | None]


class MissingReference(RuntimeError):
    """The ancestor tile a block needs is not stored (its upstream block has not run)."""


@dataclass
class Reference:
    image: Image.Image | None  # RGB, the block's frame (512 + 2 * margin); None at the root
    span: int  # 0 (none), 2 (parent) or 4 (grandparent quadrant)
    tiles: list[Tile] = field(default_factory=list)  # the ancestor tiles it was cut from


def store_reader(store: TileStore, layer: str) -> MapTileReader:
    def read(tile: Tile) -> Image.Image | None:
        stored = store.get(layer, tile)
        return None if stored is None else Image.open(io.BytesIO(stored.data))

    return read


def read_frame(source: ImagerySource, block: Block, margin: int) -> Mosaic:
    """The block's imagery framed by `margin` px of context on every side (the tiles around
    it are read whole and cut); beyond the zoom's grid the frame is no-data."""
    z, n = block.child_zoom, 1 << block.child_zoom
    pad = -(-margin // TILE_SIZE)  # whole tiles of context to read
    x0, y0, span = 2 * block.x - pad, 2 * block.y - pad, 2 + 2 * pad
    gx0, gy0 = max(0, x0), max(0, y0)
    gx1, gy1 = min(n, x0 + span), min(n, y0 + span)
    read = source.read(z, gx0, gy0, gx1 - gx0, gy1 - gy0)
    tiles = Mosaic.blank(span * TILE_SIZE, span * TILE_SIZE, read.overzoom)
    rows = slice((gy0 - y0) * TILE_SIZE, (gy1 - y0) * TILE_SIZE)
    cols = slice((gx0 - x0) * TILE_SIZE, (gx1 - x0) * TILE_SIZE)
    tiles.rgb[rows, cols], tiles.mask[rows, cols] = read.rgb, read.mask
    cut = slice(pad * TILE_SIZE - margin, pad * TILE_SIZE + BLOCK_SIZE + margin)
    return Mosaic(tiles.rgb[cut, cut], tiles.mask[cut, cut], read.overzoom)


def frame_centre(frame: Mosaic, margin: int) -> Mosaic:
    """The block itself (512x512) inside its frame."""
    cut = slice(margin, margin + BLOCK_SIZE)
    return Mosaic(frame.rgb[cut, cut], frame.mask[cut, cut], frame.overzoom)


def reference_for(
    block: Block, root_zoom: int, span: int, read: MapTileReader, margin: int = 0
) -> Reference:
    """The cascade reference: grandparent quadrant (4X) where it exists, else parent (2X),
    upsampled to the block's frame. The frame's margin comes from the ancestor's neighbours;
    where one is not generated yet (or off the grid) the ancestor's edge is repeated."""
    child_zoom = block.child_zoom
    if span == 4 and child_zoom - 2 >= root_zoom:
        source = parent_of(block.parent)
    elif child_zoom - 1 >= root_zoom:
        span, source = 2, block.parent
    else:
        return Reference(None, 0)
    image = read(source)
    if image is None:
        raise MissingReference(f"reference tile {source.z}/{source.x}/{source.y} is not stored")
    t = TILE_SIZE
    # The source and its 8 neighbours as one canvas; the frame in its pixels (span child
    # pixels per source pixel), the canvas starting one tile up and left of the source.
    canvas = np.pad(np.asarray(image.convert("RGB")), ((t, t), (t, t), (0, 0)), mode="edge")
    left = (block.x * BLOCK_SIZE - margin) // span - (source.x - 1) * t
    top = (block.y * BLOCK_SIZE - margin) // span - (source.y - 1) * t
    side = (BLOCK_SIZE + 2 * margin) // span
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
    size = BLOCK_SIZE + 2 * margin
    return Reference(window.resize((size, size), Image.Resampling.BILINEAR), span, used)


def block_request(
    block: Block, imagery: Mosaic, reference: Reference, seed: int, margin: int = 0
) -> BlockRequest:
    """`imagery` and the reference are the block's frame; seed is the layer's noise seed."""
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
        margin=margin,
        origin=(block.x * BLOCK_SIZE - margin, block.y * BLOCK_SIZE - margin),
    )


@dataclass
class Drawn:
    """One block as `draw_block` drew it."""

    imagery: Mosaic  # the block's own 512x512 imagery
    tiles: list[Image.Image]  # its four RGBA tiles in `Block.children` order
    reference: Reference  # no image at the root zoom or for a no-data block
    request: BlockRequest | None  # None for a no-data block: nothing was generated
    seconds: float  # the generation alone


def draw_block(
    block: Block,
    source: ImagerySource,
    generator: Generator,
    read: MapTileReader,
    root_zoom: int,
    span: int,
    margin: int,
) -> Drawn:
    """Imagery frame, cascade reference, generation, four tiles. A block without imagery gets
    transparent no-data tiles: nothing is invented where there is no data."""
    frame = read_frame(source, block, margin)
    imagery = frame_centre(frame, margin)
    if imagery.empty:
        return Drawn(imagery, blank_block(), Reference(None, 0), None, 0.0)
    reference = reference_for(block, root_zoom, span, read, margin)
    request = block_request(block, frame, reference, block.noise_seed(generator.model_id), margin)
    start = time.perf_counter()
    canvas = generator.generate([request])[0]
    seconds = time.perf_counter() - start
    return Drawn(imagery, cut_block(canvas, imagery.mask), reference, request, seconds)


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
