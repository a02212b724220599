"""Read an OSM extract (.osm.pbf) with pyosmium into styled world features in mercator metres."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import osmium

from worker.world.features import Feature, line, lonlat_to_mercator, point, polygon, ring_area

log = logging.getLogger(__name__)

HIGHWAY_KIND = {  # OSM highway=* -> style kind
    **dict.fromkeys(["motorway", "trunk", "primary"], "road:primary"),
    **dict.fromkeys(["motorway_link", "trunk_link", "primary_link"], "road:primary"),
    **dict.fromkeys(["secondary", "secondary_link"], "road:secondary"),
    **dict.fromkeys(["tertiary", "tertiary_link"], "road:tertiary"),
    **dict.fromkeys(["residential", "unclassified", "living_street", "road"], "road:residential"),
    "service": "road:service",
    **dict.fromkeys(
        ["footway", "cycleway", "path", "steps", "pedestrian", "track", "bridleway", "trail"],
        "road:footway",
    ),
}
_WATERWAY_WIDTH_M = {"river": 20.0, "canal": 12.0, "stream": 3.0, "ditch": 1.5, "drain": 1.5}
_BUILTUP = {"residential", "commercial", "retail", "industrial", "civil", "construction",
            "military", "railway"}  # fmt: skip
_WOOD = {"wood", "scrub", "heath", "wetland"}
_WATER_LANDUSE = {"basin", "pond", "reservoir"}


def _underground(tags: osmium.osm.TagList | dict[str, str]) -> bool:
    layer = tags.get("layer") or "0"
    return (
        tags.get("tunnel") in ("yes", "culvert", "building_passage")
        or tags.get("location") == "underground"
        or tags.get("indoor") not in (None, "no")
        or (layer.lstrip("-").isdigit() and int(layer) < 0)
    )


def area_kind(tags: osmium.osm.TagList | dict[str, str]) -> str | None:
    """Style kind of an OSM area, or None when it is not drawn."""
    if _underground(tags):
        return None
    if tags.get("building", "no") != "no":
        return "building"
    if tags.get("natural") == "water" or "water" in tags or tags.get("landuse") in _WATER_LANDUSE:
        return "water"
    if tags.get("natural") in _WOOD or tags.get("landuse") == "forest":
        return "wood"
    if tags.get("leisure") in ("park", "garden"):
        return "park"
    if tags.get("landuse") in ("grass", "meadow", "village_green") or tags.get("leisure") in (
        "pitch",
        "playground",
    ):
        return "grass"
    if tags.get("landuse") in ("farmland", "farmyard", "orchard"):
        return "farmland"
    if tags.get("landuse") in _BUILTUP:
        return "landuse:builtup"
    is_square = tags.get("place") == "square" or "area:highway" in tags
    if is_square or (tags.get("highway") == "pedestrian" and tags.get("area") == "yes"):
        return "pedestrian"
    if tags.get("amenity") == "parking":
        return "parking"
    return None


def _valid_runs(nodes: osmium.osm.WayNodeList) -> list[np.ndarray]:
    """Contiguous runs of nodes with known locations (the extract drops nodes outside its bbox)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for nd in nodes:
        if nd.location.valid():
            runs[-1].append((nd.lon, nd.lat))
        elif runs[-1]:
            runs.append([])
    return [lonlat_to_mercator(*np.asarray(r).T) for r in runs if len(r) >= 2]


def _sea_polygons(pieces: list[np.ndarray], bounds: tuple[float, float, float, float]) -> list:
    """Close coastline pieces cut by the extract along its border into water polygons.

    OSM coastlines keep the water on their right. A piece whose ends both touch the same border
    side is closed by that side; the result is water when it winds clockwise.
    """
    x0, y0, x1, y1 = bounds
    tol = 40.0
    out = []
    for pts in pieces:
        a, b = pts[0], pts[-1]
        for axis, edge in ((0, x0), (0, x1), (1, y0), (1, y1)):
            if abs(a[axis] - edge) < tol and abs(b[axis] - edge) < tol:
                ring = np.vstack([pts, [b[0], b[1]], [a[0], a[1]]])
                ring[-2:, axis] = edge
                if ring_area(ring) < 0:
                    out.append(ring)
                break
    return out


class _Reader(osmium.SimpleHandler):
    def __init__(self) -> None:
        super().__init__()
        self.features: list[Feature] = []
        self.coast: list[np.ndarray] = []

    def node(self, n: osmium.osm.Node) -> None:
        if n.tags.get("natural") == "tree" and n.location.valid():
            xy = lonlat_to_mercator(n.location.lon, n.location.lat)
            # Crown radius (ground metres) varies per tree but is fixed by its id.
            r = 2.5 + (n.id * 2654435761 % 1000) / 1000 * 2.5
            self.features.append(point("tree", xy, n.id * 4 + 3, r))

    def way(self, w: osmium.osm.Way) -> None:
        t = w.tags
        if t.get("natural") == "coastline":
            self.coast.extend(_valid_runs(w.nodes))
            return
        if _underground(t):
            return
        kind, width = None, 0.0
        if "highway" in t and t.get("area") != "yes" and t["highway"] in HIGHWAY_KIND:
            kind = HIGHWAY_KIND[t["highway"]]
        elif t.get("railway") in ("rail", "light_rail", "narrow_gauge"):
            kind = "rail"
        elif t.get("waterway") in _WATERWAY_WIDTH_M:
            kind, width = "river", _WATERWAY_WIDTH_M[t["waterway"]]
        elif t.get("natural") == "tree_row":
            kind = "tree_row"
        if kind is None:
            return
        for i, run in enumerate(_valid_runs(w.nodes)):
            self.features.append(line(kind, run, (w.id * 64 + i) * 4 + 1, width))

    def area(self, a: osmium.osm.Area) -> None:
        kind = area_kind(a.tags)
        if kind is None:
            return
        try:
            for i, outer in enumerate(a.outer_rings()):
                rings = [lonlat_to_mercator(*np.array([(n.lon, n.lat) for n in outer]).T)]
                for inner in a.inner_rings(outer):
                    rings.append(lonlat_to_mercator(*np.array([(n.lon, n.lat) for n in inner]).T))
                self.features.append(polygon(kind, rings, (a.id * 64 + i) * 4 + 2))
        except osmium.InvalidLocationError:
            log.debug("area %s has nodes outside the extract; skipped", a.id)


def load_osm(path: Path, bbox_lonlat: tuple[float, float, float, float]) -> list[Feature]:
    """All drawable features of an extract whose data covers `bbox_lonlat` (W, S, E, N)."""
    reader = _Reader()
    reader.apply_file(str(path), locations=True)
    w, s, e, n = bbox_lonlat
    (x0, y0), (x1, y1) = lonlat_to_mercator(np.array([w, e]), np.array([s, n]))
    for i, ring in enumerate(_sea_polygons(reader.coast, (x0, y0, x1, y1))):
        reader.features.append(polygon("water", [ring], -(i + 1)))
    log.info("read %d features from %s", len(reader.features), path.name)
    return reader.features
