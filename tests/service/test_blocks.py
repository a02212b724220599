"""worker.blocks: a block's frame of imagery, context margin included, and its request."""

from __future__ import annotations

import numpy as np
import pytest

from app.tiles import Block
from worker import blocks
from worker.imagery.base import Mosaic, check_block
from worker.reference import Reference


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


def test_the_request_carries_the_frame_origin_and_margin() -> None:
    source, block = GridSource(), Block("l", 15, 100, 200)
    frame = blocks.read_frame(source, block, 64)
    request = blocks.block_request(block, frame, Reference(None, 0), 5, margin=64)
    assert request.margin == 64 and request.imagery.size == (640, 640)
    assert request.origin == (200 * 256 - 64, 400 * 256 - 64) and request.noise_seed == 5
