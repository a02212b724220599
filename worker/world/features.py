"""Map features of the synthetic world in Web Mercator metres, and a grid-bucket spatial index
so a tile render only touches the features near it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

EARTH_HALF = 20037508.342789244  # half the Web Mercator world width in metres


@dataclass(frozen=True)
class Feature:
    """One styled geometry.

    `kind` is a style key ("building", "road:primary", "water", "tree", ...); `rings` holds the
    geometry as (N, 2) float64 arrays of mercator metres: for a polygon the outer ring followed by
    its holes, for a line one polyline, for a point one row. `fid` is a stable id: it orders
    drawing and seeds per-feature variation (roof colours), so it must not depend on the tile.
    """

    kind: str
    geom: str  # "polygon" | "line" | "point"
    rings: tuple[np.ndarray, ...]
    fid: int
    size_m: float = 0.0  # ground metres: crown radius of a tree, width of a river; 0 = default

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        pts = np.concatenate(self.rings) if len(self.rings) > 1 else self.rings[0]
        pad = 3 * self.size_m  # ground -> mercator metres is 1/cos(lat); x3 covers |lat| < 70
        return (
            float(pts[:, 0].min()) - pad,
            float(pts[:, 1].min()) - pad,
            float(pts[:, 0].max()) + pad,
            float(pts[:, 1].max()) + pad,
        )


def lonlat_to_mercator(lon: np.ndarray | float, lat: np.ndarray | float) -> np.ndarray:
    """EPSG:4326 -> EPSG:3857 metres, vectorised; returns (..., 2)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.clip(np.asarray(lat, dtype=np.float64), -85.0511, 85.0511)
    x = np.radians(lon) * 6378137.0
    y = np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) * 6378137.0
    return np.stack([x, y], axis=-1)


def mercator_to_lonlat(x: float, y: float) -> tuple[float, float]:
    lon = math.degrees(x / 6378137.0)
    lat = math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2)
    return lon, lat


def metres_per_pixel(z: int) -> float:
    """Mercator metres per pixel at zoom z (ground metres = this x cos(lat))."""
    return 2 * EARTH_HALF / (256 * 2**z)


@dataclass
class FeatureIndex:
    """Features bucketed on a regular grid of `cell` mercator metres.

    Queries return features sorted by (draw order, fid) so overlapping features stack the same
    way in every tile — a per-tile order would show as seams.
    """

    features: list[Feature]
    cell: float = 250.0
    _buckets: dict[tuple[int, int], list[int]] = field(default_factory=dict, repr=False)
    _bboxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)), repr=False)

    def __post_init__(self) -> None:
        self._bboxes = np.array([f.bbox for f in self.features], dtype=np.float64).reshape(-1, 4)
        for i, (x0, y0, x1, y1) in enumerate(self._bboxes):
            for key in self._cells(x0, y0, x1, y1):
                self._buckets.setdefault(key, []).append(i)

    def _cells(self, x0: float, y0: float, x1: float, y1: float) -> Iterable[tuple[int, int]]:
        c = self.cell
        for i in range(math.floor(x0 / c), math.floor(x1 / c) + 1):
            for j in range(math.floor(y0 / c), math.floor(y1 / c) + 1):
                yield i, j

    def query(
        self, bounds: tuple[float, float, float, float], order: dict[str, int] | None = None
    ) -> list[Feature]:
        """Features whose bbox intersects `bounds` (mercator x0, y0, x1, y1)."""
        x0, y0, x1, y1 = bounds
        hits: set[int] = set()
        for key in self._cells(x0, y0, x1, y1):
            hits.update(self._buckets.get(key, ()))
        if not hits:
            return []
        idx = np.fromiter(hits, dtype=np.int64)
        b = self._bboxes[idx]
        keep = idx[(b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0)]
        found = [self.features[i] for i in keep]
        rank = order or {}
        found.sort(key=lambda f: (rank.get(f.kind, 0), f.fid))
        return found


def ring_area(ring: np.ndarray) -> float:
    """Signed shoelace area (positive = counter-clockwise in mercator, y up)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygon(kind: str, rings: Sequence[np.ndarray], fid: int) -> Feature:
    return Feature(kind, "polygon", tuple(np.asarray(r, dtype=np.float64) for r in rings), fid)


def line(kind: str, pts: np.ndarray, fid: int, width_m: float = 0.0) -> Feature:
    return Feature(kind, "line", (np.asarray(pts, dtype=np.float64),), fid, width_m)


def point(kind: str, xy: Sequence[float] | np.ndarray, fid: int, radius_m: float = 0.0) -> Feature:
    return Feature(kind, "point", (np.asarray([xy], dtype=np.float64),), fid, radius_m)
