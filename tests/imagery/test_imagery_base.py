"""The contract and its shared pieces: Mosaic, tile decoding, overzoom resampling, open_source."""

from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest
from imagery_fixtures import GEOTIFF, KAMPALA
from PIL import Image

from app.imagery_config import parse_imagery_config
from worker.imagery import ImagerySource, Mosaic, open_source
from worker.imagery.base import decode_tile, upsample


def encode(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def test_mosaic_empty() -> None:
    blank = Mosaic.blank(512, 256, overzoom=2)
    assert blank.empty and blank.rgb.shape == (256, 512, 3) and blank.overzoom == 2
    blank.mask[3, 4] = True
    assert not blank.empty


def test_decode_rgba_rgb_grey_and_palette() -> None:
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[:128] = (10, 20, 30, 255)
    rgb, mask = decode_tile(encode(Image.fromarray(rgba)))
    assert mask[:128].all() and not mask[128:].any() and (rgb[0, 0] == (10, 20, 30)).all()

    jpeg_rgb, jpeg_mask = decode_tile(encode(Image.new("RGB", (256, 256), (200, 0, 0)), "JPEG"))
    assert jpeg_mask.all() and abs(int(jpeg_rgb[5, 5, 0]) - 200) <= 2

    grey, grey_mask = decode_tile(encode(Image.new("L", (256, 256), 77)))
    assert grey_mask.all() and (grey == 77).all()

    palette = Image.new("P", (256, 256), 1)
    palette.putpalette([0, 0, 0, 50, 60, 70] + [0] * 762)
    palette.paste(0, (0, 0, 256, 64))
    palette.info["transparency"] = 0
    pal_rgb, pal_mask = decode_tile(encode(palette))
    assert (
        not pal_mask[:64].any() and pal_mask[64:].all() and (pal_rgb[100, 0] == (50, 60, 70)).all()
    )


def test_decode_retina_tiles_to_256() -> None:
    rgb, mask = decode_tile(encode(Image.new("RGB", (512, 512), (1, 2, 3)), "WEBP"))
    assert rgb.shape == (256, 256, 3) and mask.all()
    with pytest.raises(ValueError, match="not square"):
        decode_tile(encode(Image.new("RGB", (256, 128))))


def test_upsample_does_not_darken_next_to_holes() -> None:
    source = Mosaic.blank(4, 4)
    source.rgb[:, :2] = 200
    source.mask[:, :2] = True
    up = upsample(source, (0, 0, 4, 4), (8, 8))
    assert (up.mask[:, :4]).all() and not up.mask[:, 4:].any()
    assert (up.rgb[up.mask] == 200).all(), "the hole's zeros do not bleed into the data"


def test_every_source_meets_the_protocol() -> None:
    sources = [
        open_source(parse_imagery_config({"type": "dir", "path": KAMPALA})),
        open_source(parse_imagery_config({"type": "xyz", "url": "http://127.0.0.1:9/{z}/{x}/{y}"})),
        open_source(parse_imagery_config({"type": "geotiff", "path": str(GEOTIFF)})),
    ]
    for source in sources:
        assert isinstance(source, ImagerySource)
        source.close()


@pytest.mark.skipif(
    importlib.util.find_spec("worker.imagery.world") is None, reason="world source not written yet"
)
def test_world_source_opens_lazily() -> None:
    source = open_source(parse_imagery_config({"type": "world", "seed": 1}))
    assert isinstance(source, ImagerySource)
    source.close()
