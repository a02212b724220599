"""A supersampled pixel window in global tile-pixel coordinates, and the drawing helpers both
renderers share (polygons with holes, round-capped lines, dashes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from worker.world.features import EARTH_HALF, metres_per_pixel

Fill = int | float | tuple[int, ...]


@dataclass(frozen=True)
class Frame:
    """Output pixels [px0, px0+width) x [py0, py0+height) at zoom z, global pixel coordinates.

    Drawing happens on a canvas `margin` pixels larger on every side and `ss` times supersampled;
    every coordinate is global, so the same feature lands on the same sub-pixels whichever tile
    is rendered and neighbouring tiles join without seams.
    """

    z: int
    px0: int
    py0: int
    width: int
    height: int
    margin: int = 16
    ss: int = 2
    lat0: float = 0.0  # latitude used for ground metres (constant per world)

    @property
    def size(self) -> tuple[int, int]:
        return ((self.width + 2 * self.margin) * self.ss, (self.height + 2 * self.margin) * self.ss)

    @property
    def mpp(self) -> float:
        """Mercator metres per output pixel."""
        return metres_per_pixel(self.z)

    @property
    def ground_mpp(self) -> float:
        """Ground metres per output pixel at the world's latitude."""
        return self.mpp * math.cos(math.radians(self.lat0))

    def px(self, ground_m: float) -> float:
        """A ground distance in supersampled canvas pixels."""
        return ground_m / self.ground_mpp * self.ss

    def to_canvas(self, pts: np.ndarray) -> np.ndarray:
        """(N, 2) mercator metres -> (N, 2) supersampled canvas pixels."""
        gx = (pts[:, 0] + EARTH_HALF) / self.mpp
        gy = (EARTH_HALF - pts[:, 1]) / self.mpp
        out = np.empty_like(pts)
        out[:, 0] = (gx - (self.px0 - self.margin)) * self.ss
        out[:, 1] = (gy - (self.py0 - self.margin)) * self.ss
        return out

    def bounds_m(self, pad_ground_m: float = 0.0) -> tuple[float, float, float, float]:
        """Mercator bounds of the whole canvas, widened by a ground distance."""
        pad = self.margin * self.mpp + pad_ground_m / math.cos(math.radians(self.lat0))
        x0 = self.px0 * self.mpp - EARTH_HALF
        y1 = EARTH_HALF - self.py0 * self.mpp
        x1 = x0 + self.width * self.mpp
        y0 = y1 - self.height * self.mpp
        return (x0 - pad, y0 - pad, x1 + pad, y1 + pad)

    def pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Global x and y pixel-centre coordinates of the (non-supersampled) canvas with margin."""
        gx = np.arange(self.px0 - self.margin, self.px0 + self.width + self.margin) + 0.5
        gy = np.arange(self.py0 - self.margin, self.py0 + self.height + self.margin) + 0.5
        return gx.astype(np.float64), gy.astype(np.float64)

    def crop(self, arr: np.ndarray) -> np.ndarray:
        """Cut the margin from an output-resolution array."""
        m = self.margin
        return arr[m : m + self.height, m : m + self.width]


def _xy(pts: np.ndarray) -> list[tuple[float, float]]:
    return [tuple(p) for p in pts.tolist()]


def fill_polygon(
    targets: Sequence[tuple[ImageDraw.ImageDraw, Fill]], rings: Sequence[np.ndarray]
) -> None:
    """Fill an outer ring minus its holes on several images at once (same geometry)."""
    outer = rings[0]
    if len(outer) < 3:
        return
    if len(rings) == 1:
        for draw, fill in targets:
            draw.polygon(_xy(outer), fill=fill)
        return
    # Holes: rasterise the polygon once into a mask over its bbox and paste through it.
    x0, y0 = np.floor(outer.min(axis=0)).astype(int)
    x1, y1 = np.ceil(outer.max(axis=0)).astype(int) + 1
    w, h = targets[0][0].im.size
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = Image.new("1", (x1 - x0, y1 - y0), 0)
    md = ImageDraw.Draw(mask)
    md.polygon(_xy(outer - (x0, y0)), fill=1)
    for hole in rings[1:]:
        if len(hole) >= 3:
            md.polygon(_xy(hole - (x0, y0)), fill=0)
    for draw, fill in targets:
        draw.bitmap((x0, y0), mask, fill=fill)


def stroke(draw: ImageDraw.ImageDraw, pts: np.ndarray, width: float, fill: Fill) -> None:
    """A polyline with round joins and caps, so consecutive ways meet without notches."""
    w = max(1, round(width))
    if len(pts) >= 2:
        draw.line(_xy(pts), fill=fill, width=w, joint="curve")
    if w >= 3:
        r = w / 2
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)


def dashes(pts: np.ndarray, dash: float, gap: float) -> list[np.ndarray]:
    """Split a polyline into dashes measured from its own first vertex.

    The phase depends on the line, not on the tile, so dashes continue across tile borders.
    Lengths are in the units of `pts`.
    """
    seg = np.diff(pts, axis=0)
    seg_len = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    total, period = cum[-1], dash + gap
    out = []
    start = 0.0
    while start < total:
        end = min(start + dash, total)
        ts = np.concatenate([[start], cum[(cum > start) & (cum < end)], [end]])
        xs = np.interp(ts, cum, pts[:, 0])
        ys = np.interp(ts, cum, pts[:, 1])
        out.append(np.stack([xs, ys], axis=1))
        start += period
    return out


def reduce(img: Image.Image, ss: int) -> Image.Image:
    """Box-filter a supersampled canvas back to output pixels (aligned to the global grid)."""
    return img.reduce(ss) if ss > 1 else img
