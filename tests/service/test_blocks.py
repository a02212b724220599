"""worker.blocks: a block's frame of imagery and reference, context margin included."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.tiles import Block, Tile
from model import prepare_reference
from worker import blocks
from worker.imagery.base import Mosaic, check_block


class GridSource:
    """Imagery whose pixels say where they are: R, G = global x, y mod 251, B = zoom."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int, int, int, int]] = []

    def read(self, z: int, x: int, y: int, width: int = 2, height: int = 2) -> Mosaic:
        check_block(z, x, y, width, height)
        self.reads.append((z, x, y, width, height))
        gy, gx = np.mgrid[y * 256 : (y + height) * 256, x * 256 : (x + width) * 256]
        rgb = np.stack([gx % 251, gy % 251, np.full_like(gx, z)], axis=-1).astype(np.uint8)
        return Mosaic(rgb=rgb, mask=np.ones(rgb.shape[:2], bool))

    def close(self) -> None:
        pass


def test_margin_0_reads_just_the_block() -> None:
    source, block = GridSource(), Block("l", 15, 100, 200)
    frame = blocks.read_frame(source, block, 0)
    assert source.reads == [(16, 200, 400, 2, 2)]
    assert np.array_equal(frame.rgb, source.read(16, 200, 400).rgb)


@pytest.mark.parametrize("margin", [32, 64, 256])
def test_the_frame_is_the_block_with_context_around_it(margin: int) -> None:
    source, block = GridSource(), Block("l", 15, 100, 200)
    frame = blocks.read_frame(source, block, margin)
    side = 512 + 2 * margin
    assert frame.rgb.shape == (side, side, 3) and frame.mask.all()
    x0, y0 = 200 * 256 - margin, 400 * 256 - margin  # the frame's global top-left pixel
    assert tuple(frame.rgb[0, 0, :2]) == (x0 % 251, y0 % 251)
    assert tuple(frame.rgb[-1, -1, :2]) == ((x0 + side - 1) % 251, (y0 + side - 1) % 251)
    centre = blocks.frame_centre(frame, margin)
    assert np.array_equal(centre.rgb, source.read(16, 200, 400).rgb)


def test_context_beyond_the_grid_is_no_data() -> None:
    source, block = GridSource(), Block("l", 2, 0, 3)  # bottom-left corner of zoom 3
    frame = blocks.read_frame(source, block, 64)
    assert source.reads[0] == (3, 0, 5, 3, 3)  # the in-grid tiles only
    assert not frame.mask[:, :64].any() and not frame.mask[-64:].any()
    assert frame.mask[:-64, 64:].all()
    assert not frame.rgb[~frame.mask].any()


def tile_of(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (256, 256), colour)


def gradient_tile() -> Image.Image:
    a = np.zeros((256, 256, 3), np.uint8)
    a[..., 0], a[..., 1] = np.arange(256)[None, :], np.arange(256)[:, None]
    return Image.fromarray(a)


@pytest.mark.parametrize("child", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_without_margin_the_reference_is_the_upsampled_ancestor(child: tuple[int, int]) -> None:
    grand = Tile(50, 100, 13)
    block = Block("l", 14, 2 * grand.x + child[0], 2 * grand.y + child[1])
    tiles = {block.parent: gradient_tile(), grand: gradient_tile().transpose(0)}
    ref2 = blocks.reference_for(block, 13, 2, tiles.get)
    assert ref2.span == 2 and ref2.tiles == [block.parent]
    assert np.array_equal(
        np.asarray(ref2.image), np.asarray(prepare_reference(tiles[block.parent], 2))
    )
    ref4 = blocks.reference_for(block, 13, 4, tiles.get)
    assert ref4.span == 4 and ref4.tiles == [grand]
    expected = prepare_reference(tiles[grand], 4, child)
    assert np.array_equal(np.asarray(ref4.image), np.asarray(expected))


def test_the_margin_comes_from_the_ancestors_neighbours() -> None:
    block = Block("l", 14, 40, 60)
    parent = block.parent
    tiles = {parent: tile_of((10, 10, 10)), Tile(41, 60, 14): tile_of((200, 0, 0))}
    ref = blocks.reference_for(block, 14, 2, tiles.get, margin=64)
    a = np.asarray(ref.image)
    assert a.shape == (640, 640, 3)
    assert ref.tiles == [parent, Tile(41, 60, 14)]  # the east neighbour; the others are missing
    assert tuple(a[320, 630]) == (200, 0, 0)  # east margin: the neighbour
    assert tuple(a[320, 5]) == (10, 10, 10)  # west margin: missing, the parent's edge repeated
    assert tuple(a[320, 320]) == (10, 10, 10)
    # The 2X reference's margin is 32 px of the parent's zoom: 64 px once upsampled.
    assert tuple(a[320, 560]) == (10, 10, 10) and tuple(a[320, 580]) == (200, 0, 0)


def test_a_missing_ancestor_is_an_error_and_the_root_has_no_reference() -> None:
    block = Block("l", 14, 40, 60)
    with pytest.raises(blocks.MissingReference, match="14/40/60"):
        blocks.reference_for(block, 14, 2, {}.get, margin=64)
    assert blocks.reference_for(block, 15, 4, {}.get, margin=64).image is None


def test_the_request_carries_the_frame_origin_and_margin() -> None:
    source, block = GridSource(), Block("l", 15, 100, 200)
    frame = blocks.read_frame(source, block, 64)
    request = blocks.block_request(block, frame, blocks.Reference(None, 0), 5, margin=64)
    assert request.margin == 64 and request.imagery.size == (640, 640)
    assert request.origin == (200 * 256 - 64, 400 * 256 - 64) and request.seed == 5
