"""Partial labels: building footprints become a styled map plus a knowledge mask, and the dataset
builder turns any imagery source + labels into training pairs; bad labels fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import mercantile
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from app.cli.dataset import dataset
from worker.world import style as st
from worker.world.labels import KNOWN, NOT_LABELLED, UNKNOWN, LabelError, LabelMap, parse_classes

FIXTURES = Path(__file__).parents[1] / "fixtures" / "imagery"
KAMPALA = FIXTURES / "kampala-oam"
BUILDINGS = FIXTURES / "kampala-oam-buildings.geojson"
TILE19 = mercantile.Tile(309606, 261636, 19)


def square(lon: float, lat: float, half: float) -> dict:
    ring = [[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
            [lon - half, lat + half], [lon - half, lat - half]]  # fmt: skip
    return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
            "coordinates": [ring]}}  # fmt: skip


def write_geojson(path: Path, features: list[dict], **extra: object) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features, **extra}))
    return path


def test_footprints_are_known_buildings_inside_the_extent_and_unknown_outside(
    tmp_path: Path,
) -> None:
    b = mercantile.bounds(TILE19)
    lon, lat = (b.west + b.east) / 2, (b.south + b.north) / 2
    labels_file = write_geojson(tmp_path / "b.geojson", [square(lon, lat, (b.east - b.west) / 8)])
    # The labels are complete over the tile's western half only.
    extent = (b.west, b.south, lon, b.north)
    labels = LabelMap.from_file(labels_file, ("building",), extent)
    got = labels.tile(TILE19.z, TILE19.x, TILE19.y)
    assert got is not None
    rgb, knowledge = got
    assert set(np.unique(knowledge)) == {UNKNOWN, NOT_LABELLED, KNOWN}
    assert (knowledge[:, 130:] == UNKNOWN).all()  # east of the extent: nothing is known
    assert (knowledge[120:136, 110:126] == KNOWN).all()  # under the footprint
    assert (knowledge[:20, :100] == NOT_LABELLED).all()  # inside, no footprint: "not building"
    assert tuple(rgb[128, 120]) == st.BUILDING
    assert labels.partial_colours == [st.BUILDING, st.BUILDING_LINE]
    # A tile wholly outside the extent has nothing to learn from.
    assert labels.tile(TILE19.z, TILE19.x + 3, TILE19.y) is None


def test_complete_labels_know_every_pixel_inside_their_extent(tmp_path: Path) -> None:
    b = mercantile.bounds(TILE19)
    feature = square((b.west + b.east) / 2, (b.south + b.north) / 2, 1e-4)
    feature["properties"] = {"building": "yes"}
    labels = LabelMap.from_file(write_geojson(tmp_path / "b.geojson", [feature]), parse_classes(
        "all"), (b.west, b.south, b.east, b.north))  # fmt: skip
    got = labels.tile(TILE19.z, TILE19.x, TILE19.y)
    assert got is not None and (got[1] == KNOWN).all() and labels.partial_colours == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32636"}}},
         "EPSG::32636"),
        ({"features": [square(450000.0, 38000.0, 10.0)]}, "not lon/lat"),
        ({"features": []}, "holds no feature"),
    ],
    ids=["crs-member", "projected-coordinates", "empty"],
)  # fmt: skip
def test_unusable_labels_fail_with_the_reason(tmp_path: Path, content: dict, message: str) -> None:
    features = content.pop("features", [square(32.59, 0.348, 1e-4)])
    path = write_geojson(tmp_path / "b.geojson", features, **content)
    with pytest.raises(LabelError, match=message):
        LabelMap.from_file(path, ("building",))


def test_class_names_are_checked() -> None:
    assert parse_classes("building,road") == ("building", "road")
    with pytest.raises(LabelError, match="unknown classes"):
        parse_classes("buildings")


def test_osm_extract_gives_the_requested_classes_only() -> None:
    pbf = Path(__file__).parents[2] / "worker" / "world" / "data" / "helsinki.osm.pbf"
    labels = LabelMap.from_file(pbf, ("building",))
    kinds = {f.kind for f in labels.world.features}
    assert kinds == {"building"}
    w, s, e, n = labels.extent
    assert 24.93 < w < e < 24.96 and 60.16 < s < n < 60.18


def build(tmp_path: Path, *args: str) -> tuple[int, str, Path]:
    out = tmp_path / "ds"
    result = CliRunner().invoke(dataset, ["build", *args, "--out", str(out)])
    return result.exit_code, result.output, out


def test_any_imagery_source_with_osm_footprints_makes_masked_pairs(tmp_path: Path) -> None:
    b = mercantile.bounds(TILE19)
    code, output, out = build(
        tmp_path, "--imagery", f"dir:{KAMPALA}", "--osm", str(BUILDINGS), "--classes",
        "building", "--label-extent", f"{b.west},{b.south},{b.east},{b.north}",
        "--zooms", "20-20", "--min-coverage", "0.3",
    )  # fmt: skip
    assert code == 0, output
    names = sorted(p.name for p in (out / "mask_256").iterdir())
    assert names == sorted(p.name for p in (out / "rs_256").iterdir())
    assert len(names) == 4  # the four z20 children of the fixture's z19 tile
    for name in names:
        mask = np.asarray(Image.open(out / "mask_256" / name))
        assert set(np.unique(mask)) <= {UNKNOWN, NOT_LABELLED, KNOWN}
        assert (mask == KNOWN).any() and (mask == NOT_LABELLED).any()
        imagery = np.asarray(Image.open(out / "rs_256" / name))
        z, x, y = (int(v) for v in Path(name).stem.split("_"))
        source = np.asarray(Image.open(KAMPALA / str(z) / str(x) / f"{y}.png").convert("RGB"))
        np.testing.assert_array_equal(imagery, source)  # read through the layer source as is
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["version"] == 2 and manifest["labelled_colours"] == [
        list(st.BUILDING), list(st.BUILDING_LINE)]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--osm", str(BUILDINGS), "--classes", "building", "--bbox", "10,10,10.1,10.1"], 2,
         "does not overlap"),
        (["--osm", str(BUILDINGS)], 2, "features need OSM tags"),
        (["--osm", str(BUILDINGS), "--classes", "houses"], 2, "unknown classes"),
        (["--osm", "missing.geojson"], 2, "does not exist"),
        (["--osm", str(BUILDINGS), "--classes", "building", "--zooms", "12-12"], 1,
         "no data at zoom 12"),
        ([], 2, "one map truth"),
    ],
    ids=["labels-elsewhere", "untagged", "bad-class", "no-labels-file", "zoom-not-served",
         "no-truth"],
)  # fmt: skip
def test_bad_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    got, output, out = build(tmp_path, "--imagery", f"dir:{KAMPALA}", *args)
    assert got == code, output
    assert message in output
    assert not out.exists()


def test_imagery_with_no_data_under_the_labels_fails_and_writes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "20" / "1"
    empty.mkdir(parents=True)
    Image.new("RGB", (256, 256)).save(empty / "1.png")  # one tile far from the labels
    code, output, out = build(
        tmp_path, "--imagery", f"dir:{tmp_path / 'empty'}", "--osm", str(BUILDINGS),
        "--classes", "building",
    )  # fmt: skip
    assert code == 1 and "no data at zoom 14" in output
    assert not out.exists()
