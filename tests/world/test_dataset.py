"""Dataset builder: layout, tile lists, reference quadrants, resumption, XYZ map sources."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from app.cli.dataset import dataset
from app.imagery_config import XYZImageryConfig
from worker import dataset as ds
from worker.imagery import open_source
from worker.world import world_for

AREA = "helsinki-heldout-tiny"  # one z17 tile; z18 gives its four children


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds")
    result = CliRunner().invoke(
        dataset, ["build", "--area", AREA, "--zooms", "17-18", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_layout_lists_and_manifest(built: Path) -> None:
    for d in ["rs_256", "map_256", "ref_scale_2_256", "ref_scale_4_256", "mask_256"]:
        assert sorted(p.name for p in (built / d).iterdir()) == [
            "17_74620_37939.png", "18_149240_75878.png", "18_149240_75879.png",
            "18_149241_75878.png", "18_149241_75879.png",
        ]  # fmt: skip
    for d in ["rs_512", "map_512", "ref_2_512", "ref_4_512", "mask_512"]:
        files = list((built / d).iterdir())
        assert [p.name for p in files] == ["17_74620_37939.png"]  # keyed by the parent tile
        assert Image.open(files[0]).size == (512, 512)
    with open(built / "test.csv") as f:  # a held-out area only gets a test list
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["tilename"] and len(rows) == 5
    assert not (built / "train.csv").exists()
    manifest = json.loads((built / "dataset.json").read_text())
    assert manifest["version"] == 2 and manifest["split"] == "heldout"
    assert manifest["labelled_colours"] == []  # the world's truth is complete
    assert manifest["area"] == AREA and manifest["zooms"] == [17, 18]


def test_reference_crops_are_the_right_quadrants(built: Path) -> None:
    world = world_for(AREA)
    z, x, y = 18, 149241, 75879  # bottom-right child: quadrant (1, 1) of its parent
    parent = np.asarray(world.map_tile(17, x >> 1, y >> 1))
    want2 = Image.fromarray(parent[128:, 128:]).resize((256, 256), Image.Resampling.BILINEAR)
    assert np.abs(_png(built / "ref_scale_2_256" / f"{z}_{x}_{y}.png") - want2).max() <= 1
    grand = np.asarray(world.map_tile(16, x >> 2, y >> 2))
    qx, qy = (x % 4) * 64, (y % 4) * 64  # quadrant of the quadrant
    want4 = Image.fromarray(grand[qy : qy + 64, qx : qx + 64]).resize(
        (256, 256), Image.Resampling.BILINEAR
    )
    assert np.abs(_png(built / "ref_scale_4_256" / f"{z}_{x}_{y}.png") - want4).max() <= 1
    # Blocks: map_512 is the four children; ref_4_512 the grandparent quadrant of the parent.
    block = _png(built / "map_512" / "17_74620_37939.png")
    assert np.array_equal(block[256:, 256:], _png(built / "map_256" / f"{z}_{x}_{y}.png"))
    g = np.asarray(world.map_tile(16, 74620 >> 1, 37939 >> 1))  # grandparent of the block
    qx, qy = (74620 & 1) * 128, (37939 & 1) * 128  # quadrant (P.x & 1, P.y & 1)
    q = g[qy : qy + 128, qx : qx + 128]
    want = Image.fromarray(q).resize((512, 512), Image.Resampling.BILINEAR)
    assert np.abs(_png(built / "ref_4_512" / "17_74620_37939.png") - want).max() <= 1


def test_rerun_resumes_without_rewriting(built: Path) -> None:
    target = built / "rs_256" / "18_149240_75878.png"
    before = target.stat().st_mtime_ns
    (built / "map_256" / "18_149240_75879.png").unlink()
    result = CliRunner().invoke(
        dataset, ["build", "--area", AREA, "--zooms", "17-18", "--out", str(built)]
    )
    assert result.exit_code == 0, result.output
    assert target.stat().st_mtime_ns == before
    assert (built / "map_256" / "18_149240_75879.png").exists()
    assert not list(built.rglob(".tmp-*"))


def test_maps_from_an_xyz_service(tmp_path: Path) -> None:
    """--map-url fetches targets over HTTP: a local server with a {z}/{x}/{y}.png folder."""
    world = world_for(AREA)
    root = tmp_path / "tiles"
    for z, x, y in [(16, 37310, 18969), (17, 74620, 37939), (15, 18655, 9484)]:
        p = root / str(z) / str(x) / f"{y}.png"
        p.parent.mkdir(parents=True)
        Image.fromarray(255 - np.asarray(world.map_tile(z, x, y))).save(p)  # inverted: traceable
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{{z}}/{{x}}/{{y}}.png"
        xyz = XYZImageryConfig(type="xyz", url=url)
        spec = ds.DatasetSpec(out=tmp_path / "out", bbox=world.bbox, zooms=range(17, 18),
                              imagery=ds.WorldImagery(world),
                              maps=ds.SourceTiles(open_source(xyz), maps=True))  # fmt: skip
        manifest = ds.build(spec)
    finally:
        server.shutdown()
    assert manifest["counts"]["train"] + manifest["counts"].get("val", 0) == 1
    got = _png(tmp_path / "out" / "map_256" / "17_74620_37939.png")
    assert np.array_equal(got, 255 - np.asarray(world.map_tile(17, 74620, 37939)).astype(int))
