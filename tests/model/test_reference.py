"""prepare_reference: crop and upsample to the block frame, picking the right quadrant."""

from __future__ import annotations

import pytest
from PIL import Image

from model import prepare_reference

COLOURS = {(0, 0): (255, 0, 0), (1, 0): (0, 255, 0), (0, 1): (0, 0, 255), (1, 1): (255, 255, 0)}


def quadrant_tile() -> Image.Image:
    tile = Image.new("RGB", (256, 256))
    for (qx, qy), colour in COLOURS.items():
        tile.paste(colour, (qx * 128, qy * 128, qx * 128 + 128, qy * 128 + 128))
    return tile


@pytest.mark.parametrize("quadrant", list(COLOURS))
def test_span4_upsamples_the_quadrant_of_the_parent_x4(quadrant: tuple[int, int]) -> None:
    ref = prepare_reference(quadrant_tile(), span=4, quadrant=quadrant)
    assert ref.size == (512, 512) and ref.mode == "RGB"
    # One colour everywhere (bilinear of a flat crop stays flat), including the corners.
    assert ref.getcolors() == [(512 * 512, COLOURS[quadrant])]


def test_span2_upsamples_the_whole_parent_x2() -> None:
    ref = prepare_reference(quadrant_tile().convert("RGBA"), span=2)
    assert ref.size == (512, 512) and ref.mode == "RGB"
    for (qx, qy), colour in COLOURS.items():
        for dx, dy in [(128, 128), (3, 3), (252, 252), (3, 252)]:
            assert ref.getpixel((qx * 256 + dx, qy * 256 + dy)) == colour


@pytest.mark.parametrize(
    ("span", "quadrant", "size"),
    [(4, None, 256), (4, (2, 0), 256), (2, (0, 0), 256), (3, None, 256), (2, None, 0)],
)
def test_bad_arguments_raise(span: int, quadrant: tuple[int, int] | None, size: int) -> None:
    tile = Image.new("RGB", (size, size)) if size else Image.new("RGB", (256, 128))
    with pytest.raises(ValueError):
        prepare_reference(tile, span=span, quadrant=quadrant)
