"""One block, start to finish, as the service renders it: imagery + cascade reference -> 4 tiles.

Shared by the RQ job (`worker.jobs`) and the evaluation harness, so both cascade identically.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import mercantile
import numpy as np
from PIL import Image

from app.store import TileStore
from app.tiles import TILE_SIZE, Block, Tile, parent_of
from model import BlockRequest, Generator, ScaleInfo
from model.request import BLOCK_SIZE
from worker.imagery.base import ImagerySource, Mosaic
from worker.reference import MapTileReader, Reference, reference_for


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
        noise_seed=seed,
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
