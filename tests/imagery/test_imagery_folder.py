"""Local tile folders: mosaics equal the fixture PNGs stitched by hand, TMS rows, overzoom."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from imagery_fixtures import KAMPALA, SHARED_KAMPALA, stitch_pngs

from app.imagery_config import parse_imagery_config
from worker.imagery import ImageryError, Mosaic, open_source
from worker.imagery.folder import FolderSource


def folder(path: Path = KAMPALA, **extra: object) -> FolderSource:
    source = open_source(parse_imagery_config({"type": "dir", "path": str(path), **extra}))
    assert isinstance(source, FolderSource)
    return source


def assert_same(mosaic: Mosaic, rgb: np.ndarray, mask: np.ndarray) -> None:
    assert mosaic.rgb.dtype == np.uint8 and mosaic.mask.dtype == bool
    assert mosaic.rgb.shape == rgb.shape and mosaic.mask.shape == mask.shape
    np.testing.assert_array_equal(mosaic.mask, mask)
    np.testing.assert_array_equal(mosaic.rgb[mask], rgb[mask])
    assert not mosaic.rgb[~mask].any(), "no-data pixels are black"


@pytest.mark.parametrize(
    ("z", "x", "y"),
    [(21, 1238424, 1046544), (20, 619212, 523272), (19, 309606, 261636)],
    ids=["z21-full", "z20-full", "z19-one-tile-of-four"],
)
def test_block_equals_stitched_pngs(z: int, x: int, y: int) -> None:
    mosaic = folder().read(z, x, y)
    assert_same(mosaic, *stitch_pngs(KAMPALA, z, range(x, x + 2), range(y, y + 2)))
    assert mosaic.overzoom == 0 and not mosaic.empty


def test_missing_tiles_are_no_data() -> None:
    # Only the north-west tile of this block exists in the fixture folder.
    mosaic = folder().read(21, 1238425, 1046545)
    rgb, mask = stitch_pngs(KAMPALA, 21, range(1238425, 1238427), range(1046545, 1046547))
    assert_same(mosaic, rgb, mask)
    assert mosaic.mask[:256, :256].mean() > 0.9
    assert not mosaic.mask[256:, :].any() and not mosaic.mask[:, 256:].any()


def test_nothing_there_is_empty() -> None:
    mosaic = folder().read(21, 0, 0)
    assert mosaic.empty and mosaic.rgb.shape == (512, 512, 3)


def test_odd_block_sizes() -> None:
    mosaic = folder().read(21, 1238424, 1046544, width=1, height=2)
    assert mosaic.rgb.shape == (512, 256, 3)
    assert_same(mosaic, *stitch_pngs(KAMPALA, 21, range(1238424, 1238425), range(1046544, 1046546)))


def test_tms_rows(tmp_path: Path) -> None:
    # The same tiles stored with TMS rows (counted from the south) read back identically.
    for png in KAMPALA.glob("*/*/*.png"):
        z, x, y = int(png.parts[-3]), int(png.parts[-2]), int(png.stem)
        target = tmp_path / str(z) / str(x) / f"{(1 << z) - 1 - y}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, target)
    tms = folder(tmp_path, scheme="tms").read(21, 1238424, 1046544)
    xyz = folder().read(21, 1238424, 1046544)
    np.testing.assert_array_equal(tms.rgb, xyz.rgb)
    np.testing.assert_array_equal(tms.mask, xyz.mask)
    assert folder(tmp_path).read(21, 1238424, 1046544).empty, "XYZ rows find nothing there"


def test_max_zoom_is_discovered() -> None:
    assert folder().max_zoom == 21
    assert folder(max_zoom=20).max_zoom == 20


def test_overzoom_aligned_block_is_the_tile_upsampled() -> None:
    # z22 block 2476848/2093088 covers exactly z21 tile 1238424/1046544.
    mosaic = folder().read(22, 2476848, 2093088)
    rgb, mask = stitch_pngs(KAMPALA, 21, range(1238424, 1238425), range(1046544, 1046545))
    assert mosaic.overzoom == 1
    np.testing.assert_array_equal(mosaic.mask, np.repeat(np.repeat(mask, 2, 0), 2, 1))
    expected = bilinear_2x(rgb.astype(np.float64))
    # Compare where all 3x3 source neighbours are data: there the mask weighting is a no-op.
    solid = np.repeat(np.repeat(interior(mask), 2, 0), 2, 1)
    difference = np.abs(mosaic.rgb.astype(np.float64) - expected)[solid]
    assert solid.mean() > 0.9
    assert difference.max() <= 1.0, "bilinear upsampling within rounding"


def test_overzoom_unaligned_block_spans_four_quadrants() -> None:
    # z22 block 2476849/2093089 straddles the four z21 fixture tiles: their inner quadrants.
    mosaic = folder().read(22, 2476849, 2093089)
    _, mask = stitch_pngs(KAMPALA, 21, range(1238424, 1238426), range(1046544, 1046546))
    quadrant = mask[128:384, 128:384]
    assert mosaic.overzoom == 1
    np.testing.assert_array_equal(mosaic.mask, np.repeat(np.repeat(quadrant, 2, 0), 2, 1))


def test_overzoom_several_levels_and_no_data() -> None:
    mosaic = folder().read(24, 1238424 * 8, 1046544 * 8)
    assert mosaic.overzoom == 3 and not mosaic.empty and mosaic.rgb.shape == (512, 512, 3)
    nowhere = folder().read(23, 0, 0)
    assert nowhere.empty and nowhere.overzoom == 2


def test_corrupt_tile_is_an_imagery_error(tmp_path: Path) -> None:
    (tmp_path / "5" / "3").mkdir(parents=True)
    (tmp_path / "5" / "3" / "4.png").write_bytes(b"not a png")
    with pytest.raises(ImageryError, match="cannot read tile 5/3/4"):
        folder(tmp_path).read(5, 3, 4)


def test_block_outside_grid_is_rejected() -> None:
    with pytest.raises(ValueError, match="leaves the zoom 1 grid"):
        folder().read(1, 1, 0)


@pytest.mark.skipif(not SHARED_KAMPALA.is_dir(), reason="shared data not beside the clone")
def test_every_complete_block_of_the_shared_set() -> None:
    """All 2x2 blocks whose four z21 tiles exist in the full shared set, pixel exact."""
    source = folder(SHARED_KAMPALA)
    tiles = {(int(p.parent.name), int(p.stem)) for p in SHARED_KAMPALA.glob("21/*/*.png")}
    blocks = [
        (x, y)
        for x, y in tiles
        if x % 2 == 0 and y % 2 == 0 and {(x + 1, y), (x, y + 1), (x + 1, y + 1)} <= tiles
    ]
    assert len(blocks) == 28
    for x, y in sorted(blocks):
        assert_same(
            source.read(21, x, y),
            *stitch_pngs(SHARED_KAMPALA, 21, range(x, x + 2), range(y, y + 2)),
        )


def bilinear_2x(image: np.ndarray) -> np.ndarray:
    """2x upsampling with pixel-centre alignment: each output pixel is 3/4 of its own source
    pixel and 1/4 of the neighbour on its side (edges repeat), separably in x and y."""

    def along(a: np.ndarray, axis: int) -> np.ndarray:
        before = np.concatenate(
            [np.take(a, [0], axis), np.take(a, range(a.shape[axis] - 1), axis)], axis
        )
        after = np.concatenate(
            [np.take(a, range(1, a.shape[axis]), axis), np.take(a, [-1], axis)], axis
        )
        out = np.repeat(a, 2, axis) * 0.75
        shape = [slice(None)] * a.ndim
        shape[axis] = slice(0, None, 2)
        out[tuple(shape)] += 0.25 * before
        shape[axis] = slice(1, None, 2)
        out[tuple(shape)] += 0.25 * after
        return out

    return along(along(image, 0), 1)


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood (edge-replicated) is all data."""
    padded = np.pad(mask, 1, mode="edge")
    out = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            out &= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


def write_solid(root: Path, z: int, x: int, y: int, rgba: tuple[int, int, int, int]) -> None:
    from PIL import Image

    (root / str(z) / str(x)).mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (256, 256), rgba).save(root / str(z) / str(x) / f"{y}.png")


def test_shallower_zooms_are_averaged_from_a_one_zoom_folder(tmp_path: Path) -> None:
    # A drone folder with z20 tiles only: three of the four children of z19 tile (1000, 2000),
    # one of them transparent (no data); a z19 read must average what is there, as an overview.
    write_solid(tmp_path, 20, 2000, 4000, (200, 0, 0, 255))
    write_solid(tmp_path, 20, 2001, 4000, (0, 100, 0, 255))
    write_solid(tmp_path, 20, 2000, 4001, (0, 0, 0, 0))
    source = folder(tmp_path)
    one = source.read(19, 1000, 2000, 1, 1)
    assert one.overzoom == 0
    assert (one.rgb[:128, :128] == (200, 0, 0)).all() and (one.rgb[:128, 128:] == (0, 100, 0)).all()
    assert one.mask[:128].all() and not one.mask[128:].any()  # no data stays no data
    # Two levels up the same pixels land in a quarter of the tile, still exact colours.
    two = source.read(18, 500, 1000, 1, 1)
    assert (two.rgb[:64, :64] == (200, 0, 0)).all() and two.mask[:64, :128].all()
    assert not two.mask[64:].any() and not two.mask[:, 128:].any()
    # Beyond OVERVIEW_LEVELS above the deepest level the folder has no data (too many files).
    from worker.imagery.folder import OVERVIEW_LEVELS

    far = 20 - OVERVIEW_LEVELS - 1
    assert source.read(far, 2000 >> (20 - far), 4000 >> (20 - far), 1, 1).empty
    # A file at a shallow level wins over the average of its children.
    write_solid(tmp_path, 19, 1000, 2000, (9, 9, 9, 255))
    assert (folder(tmp_path).read(19, 1000, 2000, 1, 1).rgb == 9).all()
