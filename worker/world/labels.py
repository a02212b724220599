"""Map truth from free labels (an OSM extract or GeoJSON) that cover only some classes, or only
part of an area: the map rendered in our style plus a per-pixel knowledge mask.

Knowledge, stored as a greyscale PNG beside each pair:
- KNOWN (255): the class of the pixel is known (a labelled feature, or any pixel inside the
  label extent when every class is labelled);
- NOT_LABELLED (128): inside the label extent but under no labelled feature, so known to be
  none of the labelled classes (e.g. "not a building") while its real class is unknown;
- UNKNOWN (0): outside the label extent. Nothing is known, and nothing is invented there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.tiles import TILE_SIZE
from model.metrics import class_map
from worker.world import style as st
from worker.world.features import Feature, line, lonlat_to_mercator, mercator_to_lonlat, polygon
from worker.world.osm import HIGHWAY_KIND, area_kind, load_osm
from worker.world.world import World

KNOWN, NOT_LABELLED, UNKNOWN = 255, 128, 0
Bbox = tuple[float, float, float, float]
# GeoJSON is WGS 84 lon/lat (RFC 7946); old files may still name it in a `crs` member.
_WGS84_NAMES = ("CRS84", "EPSG:4326", "EPSG::4326")
# A feature with no recognisable tags takes this kind when one class is labelled.
_DEFAULT_KIND = {"building": "building", "water": "water", "vegetation": "park",
                 "road": "road:residential"}  # fmt: skip


def known_where(mask: np.ndarray) -> np.ndarray:
    """A complete truth's knowledge: KNOWN where `mask` (data) is set, UNKNOWN elsewhere."""
    return np.where(mask, KNOWN, UNKNOWN).astype(np.uint8)


class LabelError(ValueError):
    """Labels that cannot be used as given (wrong CRS, no overlap, unknown class...)."""


def parse_classes(text: str) -> tuple[str, ...]:
    """'building' or 'building,road' -> the labelled classes ('all': every class)."""
    if text == "all":
        return st.CLASSES
    classes = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in classes if c not in st.CLASSES]
    if unknown or not classes:
        raise LabelError(f"unknown classes {unknown}; choose from {', '.join(st.CLASSES)}, all")
    return classes


def read_labels(path: Path, classes: Iterable[str]) -> list[Feature]:
    """The features of `classes` in an .osm.pbf/.osm extract or a GeoJSON file."""
    wanted = set(classes)
    if not path.is_file():
        raise LabelError(f"label file does not exist: {path}")
    if path.suffix.lower() in (".geojson", ".json"):
        features = _read_geojson(path, wanted)
    elif path.name.endswith((".osm.pbf", ".osm", ".pbf")):
        world = (-180.0, -85.0, 180.0, 85.0)  # the extract's own extent; coast closes on it
        features = [f for f in load_osm(path, world) if st.KIND_CLASS.get(f.kind) in wanted]
    else:
        raise LabelError(f"{path.name}: labels must be .osm.pbf, .osm or GeoJSON")
    if not features:
        raise LabelError(
            f"{path} holds no feature of the classes {sorted(wanted)} (features need OSM tags "
            "such as building=yes, or name their one class with --classes)"
        )
    return features


def _read_geojson(path: Path, wanted: set[str]) -> list[Feature]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabelError(f"cannot read {path} as GeoJSON: {exc}") from exc
    crs = ((data.get("crs") or {}).get("properties") or {}).get("name", "CRS84")
    if not any(str(crs).endswith(n) for n in _WGS84_NAMES):
        raise LabelError(
            f"{path.name} is in {crs}; labels must be WGS 84 lon/lat (GeoJSON, RFC 7946): "
            f"reproject first, e.g. ogr2ogr -t_srs EPSG:4326 out.geojson {path.name}"
        )
    default = _DEFAULT_KIND.get(next(iter(wanted))) if len(wanted) == 1 else None
    out: list[Feature] = []
    for i, feat in enumerate(data.get("features") or []):
        geom, tags = feat.get("geometry") or {}, feat.get("properties") or {}
        kind_of_area = area_kind(tags) or default
        kind_of_line = HIGHWAY_KIND.get(tags.get("highway", "")) or (
            default if default and default.startswith("road") else None
        )
        for rings, is_area in _parts(geom, path):
            kind = kind_of_area if is_area else kind_of_line
            if kind is None or st.KIND_CLASS.get(kind) not in wanted:
                continue
            xy = [lonlat_to_mercator(*r.T) for r in rings]
            fid = (i * 64 + len(out) % 64) * 4 + 2
            out.append(polygon(kind, xy, fid) if is_area else line(kind, xy[0], fid))
    return out


def _parts(geom: dict, path: Path) -> list[tuple[list[np.ndarray], bool]]:
    """(rings, is_area) of each polygon or line of a GeoJSON geometry, checked as lon/lat."""
    kind, coords = geom.get("type"), geom.get("coordinates") or []
    if kind == "Polygon":
        parts = [(coords, True)]
    elif kind == "MultiPolygon":
        parts = [(p, True) for p in coords]
    elif kind == "LineString":
        parts = [([coords], False)]
    elif kind == "MultiLineString":
        parts = [([c], False) for c in coords]
    else:
        return []
    out = []
    for rings, is_area in parts:
        arrays = [np.asarray(r, dtype=np.float64)[:, :2] for r in rings if len(r) >= 2]
        for a in arrays:
            if np.abs(a[:, 0]).max() > 180 or np.abs(a[:, 1]).max() > 90:
                x, y = a[0]
                raise LabelError(
                    f"{path.name}: coordinate ({x:.1f}, {y:.1f}) is not lon/lat in degrees; "
                    "the labels look projected (metres): reproject to EPSG:4326"
                )
        if arrays:
            out.append((arrays, is_area))
    return out


def features_bounds(features: list[Feature]) -> Bbox:
    """The lon/lat box of the features."""
    boxes = np.array([f.bbox for f in features])
    w, s = mercator_to_lonlat(boxes[:, 0].min(), boxes[:, 1].min())
    e, n = mercator_to_lonlat(boxes[:, 2].max(), boxes[:, 3].max())
    return (w, s, e, n)


@dataclass
class LabelMap:
    """Truth map tiles of labelled classes inside a label extent, with their knowledge mask."""

    world: World  # the labelled features; its data box is the label extent
    classes: tuple[str, ...]

    @classmethod
    def from_file(
        cls, path: Path, classes: tuple[str, ...], extent: Bbox | None = None
    ) -> LabelMap:
        """Labels of `classes` from `path`; `extent` (W, S, E, N) is where they are complete,
        by default the box of the features themselves."""
        features = read_labels(path, classes)
        box = extent or features_bounds(features)
        lat0 = (box[1] + box[3]) / 2
        return cls(World(path.name, features, box, lat0=lat0), classes)

    @property
    def partial_colours(self) -> list[tuple[int, int, int]]:
        """Palette colours of the labelled classes when other classes are unknown: what a
        NOT_LABELLED pixel is known not to be (empty when every class is labelled)."""
        if set(self.classes) == set(st.CLASSES):
            return []
        return [c for name in self.classes for c in st.CLASS_COLOURS[name]]

    @property
    def extent(self) -> Bbox:
        return self.world.bbox

    def overlaps(self, bbox: Bbox) -> bool:
        e = self.extent
        return e[0] < bbox[2] and bbox[0] < e[2] and e[1] < bbox[3] and bbox[1] < e[3]

    def tile(self, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(map rgb, knowledge) of tile z/x/y, or None when nothing in it is known."""
        inside = self.world.mask(z, x * TILE_SIZE, y * TILE_SIZE, TILE_SIZE, TILE_SIZE)
        if not inside.any():
            return None
        rgb = self.world.render_map(z, x * TILE_SIZE, y * TILE_SIZE, TILE_SIZE, TILE_SIZE)
        knowledge = known_where(inside)
        if set(self.classes) != set(st.CLASSES):
            labelled = [st.CLASSES.index(c) for c in self.classes]
            drawn = np.isin(class_map(rgb, st.CLASS_COLOURS), labelled)
            knowledge[inside & ~drawn] = NOT_LABELLED
        return rgb, knowledge
