"""The world renderer: deterministic, seamless across tile borders, consistent across zooms."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import mercantile
import numpy as np
import pytest

from model.metrics import class_iou, seam_strength
from worker.world import CLASS_COLOURS, world_for

HELSINKI_Z17 = mercantile.tile(24.9440, 60.1710, 17)


@pytest.fixture(scope="module")
def helsinki():
    return world_for("helsinki")


@pytest.fixture(scope="module")
def town():
    return world_for("seed:3")


def _tiles(world, kind: str, z: int, x0: int, y0: int, n: int) -> np.ndarray:
    """An n x n mosaic assembled from separately rendered tiles."""
    render = world.map_tile if kind == "map" else world.imagery_tile
    rows = [np.hstack([np.asarray(render(z, x0 + i, y0 + j))[..., :3] for i in range(n)])
            for j in range(n)]  # fmt: skip
    return np.vstack(rows)


def test_same_bytes_twice(helsinki) -> None:
    t = HELSINKI_Z17
    a = helsinki.imagery_tile(t.z, t.x, t.y).tobytes() + helsinki.map_tile(t.z, t.x, t.y).tobytes()
    b = helsinki.imagery_tile(t.z, t.x, t.y).tobytes() + helsinki.map_tile(t.z, t.x, t.y).tobytes()
    assert a == b


def test_same_bytes_in_a_fresh_process(helsinki) -> None:
    t = HELSINKI_Z17
    here = hashlib.sha256(helsinki.imagery_tile(t.z, t.x, t.y).tobytes()).hexdigest()
    code = (
        "import hashlib; from worker.world import world_for; "
        f"print(hashlib.sha256(world_for('helsinki').imagery_tile({t.z}, {t.x}, {t.y})"
        ".tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == here


@pytest.mark.parametrize("kind", ["map", "imagery"])
@pytest.mark.parametrize(("which", "z"), [("helsinki", 17), ("town", 16), ("town", 18)])
def test_no_seams_between_separately_rendered_tiles(request, which, z, kind) -> None:
    world = request.getfixturevalue(which)
    w, s, e, n = world.bbox
    t = mercantile.tile((w + e) / 2, (s + n) / 2, z)
    x0, y0 = t.x & ~1, t.y & ~1  # 4 x 4 tiles: inner borders and block borders both occur
    mosaic = _tiles(world, kind, z, x0, y0, 4)
    assert seam_strength(mosaic, kind="inner") < 1.15
    assert seam_strength(mosaic, kind="block") < 1.15


def test_a_tile_is_the_crop_of_a_larger_render(town) -> None:
    w, s, e, n = town.bbox
    t = mercantile.tile((w + e) / 2, (s + n) / 2, 17)
    big, _ = town.render_imagery(17, (t.x - 1) * 256, (t.y - 1) * 256, 768, 768)
    tile, _ = town.render_imagery(17, t.x * 256, t.y * 256, 256, 256)
    crop = big[256:512, 256:512].astype(int)
    # Identical geometry and noise; only the rasteriser's sub-pixel rounding may differ.
    assert np.mean(np.abs(crop - tile)) < 0.5
    assert np.mean(np.all(crop == tile, axis=-1)) > 0.98
    bigm = town.render_map(17, (t.x - 1) * 256, (t.y - 1) * 256, 768, 768)
    tilem = np.asarray(town.map_tile(17, t.x, t.y))
    assert np.mean(np.all(bigm[256:512, 256:512] == tilem, axis=-1)) > 0.98


# Measured: helsinki road 0.36 / building 0.83, seed:3 road 0.55 / building 0.59. Roads differ
# most by design: z16 adds service roads and widens every class x1.6, not x2.
@pytest.mark.parametrize(
    ("which", "road", "building"), [("helsinki", 0.3, 0.7), ("town", 0.45, 0.5)]
)
def test_zoom_consistent_geometry(request, which, road, building) -> None:
    """A z16 map shrunk x2 matches the z15 parent quadrant where it matters (measured values:
    see docs/world.md; thresholds sit below them with margin)."""
    world = request.getfixturevalue(which)
    w, s, e, n = world.bbox
    p = mercantile.tile((w + e) / 2, (s + n) / 2, 15)
    child = world.render_map(16, 2 * p.x * 256, 2 * p.y * 256, 512, 512)
    small = child.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    parent = world.render_map(15, p.x * 256, p.y * 256, 256, 256)
    iou = class_iou(small, parent, CLASS_COLOURS)
    assert iou["road"] > road
    assert iou["building"] > building
    assert iou["mean"] > 0.65


def test_outside_the_data_is_no_data(helsinki) -> None:
    far = mercantile.tile(24.90, 60.17, 17)  # west of the extract
    img = np.asarray(helsinki.imagery_tile(far.z, far.x, far.y))
    assert img.shape == (256, 256, 4) and not img[..., 3].any()
    edge = mercantile.tile(24.9352, 60.1700, 17)  # on the west border: part data, part none
    mask = helsinki.mask(17, edge.x * 256, edge.y * 256, 256, 256)
    assert 0 < mask.mean() < 1
