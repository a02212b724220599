"""worker.reference: the cascade reference of a block (as served and trained) and of a tile (the
256 px training pairs): the right ancestor, the right part of it, upsampled, margins included."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.tiles import Block, Tile
from worker.reference import MissingReference, reference_for, tile_reference

COLOURS = {(0, 0): (255, 0, 0), (1, 0): (0, 255, 0), (0, 1): (0, 0, 255), (1, 1): (255, 255, 0)}
GRAND = Tile(50, 100, 13)


def quadrant_tile() -> Image.Image:
    tile = Image.new("RGB", (256, 256))
    for (qx, qy), colour in COLOURS.items():
        tile.paste(colour, (qx * 128, qy * 128, qx * 128 + 128, qy * 128 + 128))
    return tile


def tile_of(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (256, 256), colour)


@pytest.mark.parametrize("quadrant", list(COLOURS))
def test_span4_upsamples_the_grandparent_quadrant_over_the_parent_x4(quadrant) -> None:
    parent = Tile(2 * GRAND.x + quadrant[0], 2 * GRAND.y + quadrant[1], 14)
    block = Block("l", parent.z, parent.x, parent.y)
    ref = reference_for(block, 13, 4, {GRAND: quadrant_tile(), parent: tile_of((9, 9, 9))}.get)
    assert ref.span == 4 and ref.tiles == [GRAND]
    assert ref.image is not None and ref.image.size == (512, 512) and ref.image.mode == "RGB"
    # One colour everywhere (bilinear of a flat crop stays flat), including the corners.
    assert ref.image.getcolors() == [(512 * 512, COLOURS[quadrant])]


def test_span2_upsamples_the_whole_parent_x2() -> None:
    block = Block("l", 14, 100, 200)
    ref = reference_for(block, 14, 2, {block.parent: quadrant_tile().convert("RGBA")}.get)
    assert ref.span == 2 and ref.tiles == [block.parent] and ref.image is not None
    assert ref.image.size == (512, 512) and ref.image.mode == "RGB"
    for (qx, qy), colour in COLOURS.items():
        for dx, dy in [(128, 128), (3, 3), (252, 252), (3, 252)]:
            assert ref.image.getpixel((qx * 256 + dx, qy * 256 + dy)) == colour


def test_span4_falls_back_to_the_parent_one_zoom_below_the_root() -> None:
    block = Block("l", 14, 100, 200)
    ref = reference_for(block, 14, 4, {block.parent: tile_of((1, 2, 3))}.get)
    assert ref.span == 2 and ref.tiles == [block.parent]


@pytest.mark.parametrize("span", [2, 4])
def test_a_tile_reference_is_the_part_of_its_ancestor_over_it(span: int) -> None:
    # The bottom-right tile under GRAND at zoom 13 + span // 2: the (1, 1) corner of it.
    n = span // 2
    tile = Tile(((GRAND.x + 1) << n) - 1, ((GRAND.y + 1) << n) - 1, GRAND.z + n)
    gradient = np.zeros((256, 256, 3), np.uint8)
    gradient[..., 0], gradient[..., 1] = np.arange(256)[None, :], np.arange(256)[:, None]
    ref = tile_reference(tile, span, {GRAND: Image.fromarray(gradient)}.get)
    assert ref.span == span and ref.tiles == [GRAND] and ref.image is not None
    side = 256 // span
    want = Image.fromarray(gradient[-side:, -side:]).resize((256, 256), Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(ref.image), np.asarray(want))
    with pytest.raises(MissingReference, match=f"13/{GRAND.x}/{GRAND.y}"):
        tile_reference(tile, span, {}.get)


def test_a_tile_reference_needs_span_2_or_4() -> None:
    with pytest.raises(ValueError, match="span must be 2 or 4"):
        tile_reference(Tile(1, 1, 15), 3, {}.get)


def test_the_margin_comes_from_the_ancestors_neighbours() -> None:
    block = Block("l", 14, 40, 60)
    parent = block.parent
    tiles = {parent: tile_of((10, 10, 10)), Tile(41, 60, 14): tile_of((200, 0, 0))}
    ref = reference_for(block, 14, 2, tiles.get, margin=64)
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
    with pytest.raises(MissingReference, match="14/40/60"):
        reference_for(block, 14, 2, {}.get, margin=64)
    assert reference_for(block, 15, 4, {}.get, margin=64).image is None
