"""Named areas of the synthetic world and the fixed train / held-out split (see docs/world.md).

The split never changes: models trained on `helsinki-train` and TRAIN_SEEDS are evaluated on
`helsinki-heldout` and HELDOUT_SEEDS, which no training code may read."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from worker.world.osm import load_osm
from worker.world.procedural import build_town, seed_bbox, seed_centre
from worker.world.world import RURAL_GROUND, URBAN_GROUND, World

DATA = Path(__file__).parent / "data"
HELSINKI_PBF = DATA / "helsinki.osm.pbf"
HELSINKI_BBOX = (24.9352, 60.1642, 24.9534, 60.1791)
# West edge of z17 tile column 74619: the split is a tile border at z17 and deeper, so no
# training tile at z17-19 overlaps the held-out part; ~63% of buildings lie west of it.
HELSINKI_SPLIT_LON = 24.94720458984375

TRAIN_SEEDS = range(0, 64)
HELDOUT_SEEDS = range(1000, 1008)

Bbox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Area:
    """A named part of the world: its data box, where its data comes from and its role."""

    name: str
    source: str  # "helsinki" or "seed:N"
    bbox: Bbox  # lon/lat W, S, E, N
    split: str  # "train" | "heldout" | "all"
    root_zoom: int = 14
    max_zoom: int = 18


AREAS: dict[str, Area] = {
    a.name: a
    for a in [
        Area("helsinki", "helsinki", HELSINKI_BBOX, "all"),
        Area(
            "helsinki-train",
            "helsinki",
            (HELSINKI_BBOX[0], HELSINKI_BBOX[1], HELSINKI_SPLIT_LON, HELSINKI_BBOX[3]),
            "train",
        ),
        Area(
            "helsinki-heldout",
            "helsinki",
            (HELSINKI_SPLIT_LON, HELSINKI_BBOX[1], HELSINKI_BBOX[2], HELSINKI_BBOX[3]),
            "heldout",
        ),
        # One z17 tile of the held-out part (74620/37939: railway station square), small enough
        # for an end-to-end evaluation in tests.
        Area("helsinki-heldout-tiny", "helsinki", (24.9500, 60.1689, 24.9526, 60.1701), "heldout"),
    ]  # fmt: skip
}


# Real imagery with OSM building footprints (../shared/data/real, CC-BY 4.0 imagery, ODbL
# footprints), split by site: never train on the held-out ones. Labels are complete inside the
# footprints' own box (the label extent); elsewhere the map is unknown.
REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"


@dataclass(frozen=True)
class RealSite:
    name: str
    imagery: Path  # a {z}/{x}/{y} tile folder
    labels: Path  # GeoJSON building footprints
    split: str  # "train" | "heldout"
    root_zoom: int  # the coarsest zoom its imagery serves well (held-out eval starts there)
    max_zoom: int = 20


REAL_SITES: dict[str, RealSite] = {
    s.name: s
    for s in [
        RealSite(
            "banepa",
            REAL_DATA / "banepa",
            REAL_DATA / "banepa/buildings-sample.geojson",
            "train",
            root_zoom=17,
        ),
        RealSite(
            "kampala",
            REAL_DATA / "oam-sites/kampala",
            REAL_DATA / "oam-sites/kampala/buildings.geojson",
            "train",
            root_zoom=19,
        ),
        RealSite(
            "zanzibar",
            REAL_DATA / "oam-sites/zanzibar",
            REAL_DATA / "oam-sites/zanzibar/buildings.geojson",
            "heldout",
            root_zoom=19,
        ),
        RealSite(
            "banepa-south",
            REAL_DATA / "oam-sites/banepa-south",
            REAL_DATA / "oam-sites/banepa-south/buildings.geojson",
            "heldout",
            root_zoom=19,
        ),
    ]  # fmt: skip
}


def is_real_site(name: str) -> bool:
    return name.removeprefix("real:") in REAL_SITES


def area_or_site(name: str) -> Area | RealSite:
    """A world area or a real site by name (both tell their split and zooms); KeyError."""
    return get_site(name) if is_real_site(name) else get_area(name)


def get_site(name: str) -> RealSite:
    """A real site by name (`real:NAME` is accepted too)."""
    key = name.removeprefix("real:")
    if key not in REAL_SITES:
        raise KeyError(f"unknown real site {name!r}; known: {', '.join(REAL_SITES)}")
    return REAL_SITES[key]


def seed_area(seed: int) -> Area:
    split = "heldout" if seed in HELDOUT_SEEDS else "train" if seed in TRAIN_SEEDS else "all"
    return Area(f"seed:{seed}", f"seed:{seed}", seed_bbox(seed), split)


def get_area(name: str) -> Area:
    """A named area, or `seed:N` / `town-N` for procedural town N."""
    m = re.fullmatch(r"(?:seed:|town-)(\d+)", name)
    if m:
        return seed_area(int(m.group(1)))
    try:
        return AREAS[name]
    except KeyError:
        known = ", ".join([*AREAS, "seed:N"])
        raise KeyError(f"unknown area {name!r}; known: {known}") from None


@functools.lru_cache(maxsize=16)
def _source_world(source: str) -> World:
    if source == "helsinki":
        feats = load_osm(HELSINKI_PBF, HELSINKI_BBOX)
        return World("helsinki", feats, HELSINKI_BBOX, lat0=60.1716, ground=URBAN_GROUND)
    seed = int(source.split(":", 1)[1])
    return World(source, build_town(seed), seed_bbox(seed), lat0=seed_centre(seed)[1],
                 ground=RURAL_GROUND)  # fmt: skip


def intersect(a: Bbox, b: Bbox | None) -> Bbox:
    """The part of box `a` inside `b` (all of `a` without `b`): a bbox never widens an area."""
    if b is None:
        return a
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def world_for(area: Area | str, bbox: Bbox | None = None) -> World:
    """The world of an area (cached per process), its data box cut to the area or `bbox`."""
    a = get_area(area) if isinstance(area, str) else area
    base = _source_world(a.source)
    box = intersect(a.bbox, bbox)  # held-out stays held out
    return base if box == base.bbox else base.restricted(a.name, box)
