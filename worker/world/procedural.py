"""Procedural towns from an integer seed: fields and woods, a river, arterials, a street grid
core with perimeter blocks, organic suburbs with detached houses, parks and trees."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worker.world.features import Feature, line, lonlat_to_mercator, point, polygon

TOWN_SIZE_M = 2400.0  # ground metres, square side of a town's world
_CELL = 2.0  # occupancy grid cell (ground metres) used to keep buildings off roads and water


def seed_centre(seed: int) -> tuple[float, float]:
    """Where town `seed` lies: a 100 x 80 lattice of 0.1 degree steps, lon 5.0-14.9 E and
    lat 44.0-51.9 N (central Europe, far from the Helsinki extract); seeds repeat every 8000."""
    s = seed % 8000
    return 5.0 + 0.1 * (s % 100), 44.0 + 0.1 * (s // 100)


def seed_bbox(seed: int) -> tuple[float, float, float, float]:
    """Lon/lat box (W, S, E, N) holding the town's data."""
    lon, lat = seed_centre(seed)
    half_lat = TOWN_SIZE_M / 2 / 111_320.0
    half_lon = half_lat / math.cos(math.radians(lat))
    return lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat


@dataclass
class _Town:
    rng: np.random.Generator
    origin: np.ndarray  # mercator metres of the centre
    k: float  # mercator metres per ground metre
    feats: list[Feature]
    occ: np.ndarray  # occupancy grid in ground metres, True = taken

    def m(self, pts: np.ndarray) -> np.ndarray:
        """Local ground metres (east, north) -> mercator metres."""
        return self.origin + np.asarray(pts, dtype=np.float64) * self.k

    def add(self, make, kind: str, pts: np.ndarray, size: float = 0.0) -> None:
        fid = len(self.feats) + 1
        if make is polygon:
            self.feats.append(polygon(kind, [self.m(pts)], fid))
        elif make is line:
            self.feats.append(line(kind, self.m(pts), fid, size))
        else:
            self.feats.append(point(kind, self.m(pts), fid, size))

    def _cells(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.occ.shape[0]
        ij = np.floor((pts + TOWN_SIZE_M / 2) / _CELL).astype(int)
        ok = (ij >= 0).all(axis=1) & (ij < n).all(axis=1)
        return ij[ok, 1], ij[ok, 0]

    def block_line(self, pts: np.ndarray, half_width: float) -> None:
        """Mark a corridor around a polyline as occupied."""
        samples = _resample(pts, _CELL / 2)
        r = int(math.ceil(half_width / _CELL))
        rows, cols = self._cells(samples)
        n = self.occ.shape[0]
        for dr in range(-r, r + 1):
            for dc in range(-r, r + 1):
                self.occ[np.clip(rows + dr, 0, n - 1), np.clip(cols + dc, 0, n - 1)] = True

    def try_building(self, corners: np.ndarray, height: float) -> bool:
        """Place a building when its footprint is free (checked 1 m inside its walls, so
        terraced neighbours may touch)."""
        c = corners.mean(axis=0)
        inner = corners - (corners - c) * (1.0 / max(np.linalg.norm(corners - c, axis=1).min(), 1))
        u, v = np.meshgrid(np.linspace(0, 1, 8), np.linspace(0, 1, 8))
        a, b, d = inner[0], inner[1], inner[3]
        pts = a + u.ravel()[:, None] * (b - a) + v.ravel()[:, None] * (d - a)
        rows, cols = self._cells(pts)
        if len(rows) < len(pts) or self.occ[rows, cols].any():
            return False
        self.occ[rows, cols] = True
        fid = len(self.feats) + 1
        self.feats.append(Feature("building", "polygon", (self.m(corners),), fid, float(height)))
        return True


def _resample(pts: np.ndarray, step: float) -> np.ndarray:
    seg = np.hypot(*np.diff(pts, axis=0).T)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.arange(0.0, cum[-1] + step, step)
    return np.stack([np.interp(t, cum, pts[:, 0]), np.interp(t, cum, pts[:, 1])], axis=1)


def _wiggly(rng: np.random.Generator, start, heading: float, length: float, step: float = 25.0,
            turn: float = 0.12) -> np.ndarray:  # fmt: skip
    """A smooth random-walk polyline (organic streets, rivers)."""
    pts = [np.asarray(start, dtype=np.float64)]
    h, dh = heading, 0.0
    for _ in range(int(length / step)):
        dh = 0.7 * dh + rng.normal(0, turn)
        h += dh
        pts.append(pts[-1] + step * np.array([math.cos(h), math.sin(h)]))
    return np.array(pts)


def _rect(c, along: np.ndarray, w: float, d: float) -> np.ndarray:
    """Rectangle centred at c, `w` along the unit vector `along`, `d` across it."""
    n = np.array([-along[1], along[0]])
    c = np.asarray(c)
    return np.array([c - along * w / 2 - n * d / 2, c + along * w / 2 - n * d / 2,
                     c + along * w / 2 + n * d / 2, c - along * w / 2 + n * d / 2])  # fmt: skip


def _blob(rng: np.random.Generator, c, r: float, n: int = 14) -> np.ndarray:
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rad = r * (1 + 0.25 * rng.uniform(-1, 1, n))
    return np.asarray(c) + np.stack([rad * np.cos(ang), rad * np.sin(ang)], axis=1)


def _countryside(t: _Town, angle: float, town_r: float) -> None:
    """Fields, meadows and woods tiling the square around the built-up core."""
    rng, half = t.rng, TOWN_SIZE_M * 0.75  # rotated rows must still cover the square's corners
    u = np.array([math.cos(angle), math.sin(angle)])
    v = np.array([-u[1], u[0]])
    a = -half
    while a < half:
        wa = rng.uniform(90, 260)
        b = -half
        while b < half:
            wb = rng.uniform(90, 260)
            c = u * (a + wa / 2) + v * (b + wb / 2)
            b += wb
            if np.linalg.norm(c) < town_r + max(wa, wb) / 2:
                continue
            kind = rng.choice(["farmland", "grass", "wood"], p=[0.7, 0.12, 0.18])
            t.add(polygon, str(kind), _rect(c, u, wa - 4, wb - 4))
        a += wa


def _grid_core(t: _Town, radius: float) -> None:
    """A rotated street grid with perimeter blocks and the odd park."""
    rng = t.rng
    ang = rng.uniform(0, np.pi / 2)
    u = np.array([math.cos(ang), math.sin(ang)])
    v = np.array([-u[1], u[0]])
    sx, sy = rng.uniform(80, 130), rng.uniform(70, 120)
    nx, ny = int(radius // sx), int(radius // sy)
    for i in range(-nx, nx + 1):  # streets along v, then along u
        kind = "road:tertiary" if i % 3 == 0 else "road:residential"
        pts = np.array([u * i * sx - v * ny * sy, u * i * sx + v * ny * sy])
        t.add(line, kind, pts)
        t.block_line(pts, 5)
    for j in range(-ny, ny + 1):
        kind = "road:tertiary" if j % 3 == 0 else "road:residential"
        pts = np.array([v * j * sy - u * nx * sx, v * j * sy + u * nx * sx])
        t.add(line, kind, pts)
        t.block_line(pts, 5)
    for i in range(-nx, nx):
        for j in range(-ny, ny):
            c = u * (i + 0.5) * sx + v * (j + 0.5) * sy
            inner_w, inner_d = sx - 18, sy - 18  # 9 m from the street centre line
            if rng.random() < 0.12:
                t.add(polygon, "park", _rect(c, u, inner_w, inner_d))
                for _ in range(int(inner_w * inner_d / 120)):
                    du, dv = rng.uniform(-0.45, 0.45, 2)
                    p = c + u * du * inner_w + v * dv * inner_d
                    t.add(point, "tree", p, rng.uniform(2.5, 5))
                continue
            depth, h = rng.uniform(10, 15), rng.uniform(12, 26)
            for side in (-1, 1):  # lots along the two long edges, gaps between some
                edge_c = c + v * side * (inner_d / 2 - depth / 2)
                x = -inner_w / 2
                while x < inner_w / 2 - 8:
                    lot = min(rng.uniform(14, 30), inner_w / 2 - x)
                    if rng.random() > 0.1:
                        t.try_building(_rect(edge_c + u * (x + lot / 2), u, lot - 0.5, depth),
                                       h + rng.uniform(-3, 3))  # fmt: skip
                    x += lot
            for side in (-1, 1):  # short edges between them
                edge_c = c + u * side * (inner_w / 2 - depth / 2)
                t.try_building(_rect(edge_c, v, inner_d - 2 * depth - 1, depth), h)


def _suburbs(t: _Town, centre_r: float, arterials: list[np.ndarray]) -> None:
    """Organic side streets off the arterials, lined with detached houses and garden trees."""
    rng = t.rng
    for art in arterials:
        for k in range(4, len(art) - 2, 3):
            p, q = art[k], art[k + 1]
            r = np.linalg.norm(p)
            if r < centre_r or r > TOWN_SIZE_M / 2 - 150 or rng.random() < 0.35:
                continue
            heading = math.atan2(*(q - p)[::-1]) + rng.choice([-1, 1]) * np.pi / 2
            street = _wiggly(rng, p, heading, rng.uniform(150, 400), step=20, turn=0.08)
            t.add(line, "road:residential", street)
            t.block_line(street, 5)
            for a, b in zip(street[1:-1], street[2:], strict=False):
                along = (b - a) / max(np.linalg.norm(b - a), 1e-9)
                n = np.array([-along[1], along[0]])
                for side in (-1, 1):
                    if rng.random() < 0.25:
                        continue
                    c = a + n * side * rng.uniform(14, 18)
                    w, d = rng.uniform(8, 13), rng.uniform(8, 12)
                    placed = t.try_building(_rect(c, along, w, d), rng.uniform(5, 9))
                    if placed and rng.random() < 0.6:  # a garden tree behind the house
                        garden = c + n * side * rng.uniform(9, 13)
                        t.add(point, "tree", garden, rng.uniform(2, 4))


def build_town(seed: int) -> list[Feature]:
    """All features of town `seed` in mercator metres; the same seed gives the same town."""
    rng = np.random.default_rng(seed)
    lon, lat = seed_centre(seed)
    n = int(TOWN_SIZE_M / _CELL)
    t = _Town(rng, lonlat_to_mercator(lon, lat), 1 / math.cos(math.radians(lat)), [],
              np.zeros((n, n), dtype=bool))  # fmt: skip
    half = TOWN_SIZE_M / 2
    radius = rng.uniform(500, 750)
    _countryside(t, rng.uniform(0, np.pi), radius * 1.1)
    t.add(polygon, "landuse:builtup", _blob(rng, (0, 0), radius * 1.1, 24))

    # A river crossing the whole square, off centre.
    side = rng.uniform(-0.5, 0.5) * radius
    heading = rng.uniform(-0.3, 0.3) + rng.choice([0, np.pi / 2])
    start = np.array([-half - 100, side]) if heading < 1 else np.array([side, -half - 100])
    river = _wiggly(rng, start, heading, TOWN_SIZE_M + 300, step=30, turn=0.05)
    width = rng.uniform(14, 40)
    t.add(line, "river", river, width)
    t.block_line(river, width / 2 + 6)
    if rng.random() < 0.5:  # a pond in the outskirts
        c = rng.uniform(-1, 1, 2) * radius * 1.2
        t.add(polygon, "water", _blob(rng, c, rng.uniform(30, 80)))
        t.block_line(np.array([c, c + 0.1]), 90)

    arterials = []
    for i in range(rng.integers(3, 6)):
        a = 2 * np.pi * i / 5 + rng.uniform(-0.4, 0.4)
        art = _wiggly(rng, (0, 0), a, half * 1.6, step=30, turn=0.05)
        arterials.append(art)
        t.add(line, "road:primary" if i < 2 else "road:secondary", art)
        t.block_line(art, 10)
    if rng.random() < 0.6:
        rail = _wiggly(rng, (-half - 100, rng.uniform(-half, half) * 0.6), rng.uniform(-0.3, 0.3),
                       TOWN_SIZE_M + 300, step=40, turn=0.02)  # fmt: skip
        t.add(line, "rail", rail)
        t.block_line(rail, 6)

    _grid_core(t, radius * 0.55)
    _suburbs(t, radius * 0.55, arterials)
    return t.feats
