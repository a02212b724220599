"""Imagery-like rendering of the same world: textured ground, roofs with shading and shadows,
asphalt with markings, tree crowns and water, all textures keyed to global coordinates."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from worker.world import imagery_style as im
from worker.world import style as st
from worker.world.features import Feature, FeatureIndex
from worker.world.noise import fbm, hash_unit, pixel_grain
from worker.world.raster import Frame, dashes, fill_polygon, reduce, stroke

QUERY_PAD_M = 45.0  # ground metres: longest shadow plus the widest road half-width
SUN = (math.cos(math.radians(40)), -math.sin(math.radians(40)))  # shadows fall to the north-east
SHADOW_PER_M = 0.7  # shadow length per metre of height


def _offset(pts: np.ndarray, d: float) -> np.ndarray:
    """Polyline offset sideways by d (averaged vertex normals; enough for lane lines)."""
    seg = np.diff(pts, axis=0)
    n = np.stack([-seg[:, 1], seg[:, 0]], axis=1)
    n /= np.maximum(np.hypot(n[:, 0], n[:, 1]), 1e-9)[:, None]
    vn = np.vstack([n[:1], n[:-1] + n[1:], n[-1:]])
    vn /= np.maximum(np.hypot(vn[:, 0], vn[:, 1]), 1e-9)[:, None]
    return pts + d * vn


class _Layers:
    """The per-pixel rasters the composer needs, drawn in one pass over the features."""

    def __init__(self, frame: Frame, ground: tuple[int, int, int]) -> None:
        size = frame.size
        self.col = Image.new("RGB", size, ground)
        self.mat = Image.new("L", size, im.GROUND)
        self.var = Image.new("L", size, 0)  # per-feature value (field furrow angle)
        self.height = Image.new("L", size, 0)  # metres x 4, for roof and crown shading
        self.shadow = Image.new("L", size, 0)
        self.d = {k: ImageDraw.Draw(getattr(self, k)) for k in vars(self) if k != "d"}

    def area(self, rings: list[np.ndarray], rgb: tuple, mat: int, var: int = 0) -> None:
        d = self.d
        fill_polygon([(d["col"], rgb), (d["mat"], mat), (d["var"], var)], rings)

    def line(self, pts: np.ndarray, width: float, rgb: tuple, mat: int) -> None:
        stroke(self.d["col"], pts, width, rgb)
        stroke(self.d["mat"], pts, width, mat)


def _draw(layers: _Layers, feats: list[Feature], frame: Frame) -> None:
    to_px, px = frame.to_canvas, frame.px
    sun = np.array(SUN) * px(1.0)
    roads = []
    for f in feats:
        if f.kind in st.ROAD_FILL:
            roads.append(f)
        elif f.kind == "building":
            rings = [to_px(r) for r in f.rings]
            h = im.building_height_m(f.fid, f.size_m)
            for t in (0.25, 0.5, 0.75, 1.0):
                shift = sun * h * SHADOW_PER_M * t
                fill_polygon([(layers.d["shadow"], 255)], [r + shift for r in rings])
            layers.area(rings, im.roof_colour(f.fid), im.ROOF)
            fill_polygon([(layers.d["height"], int(min(h * 4, 255)))], rings)
        elif f.kind == "farmland":
            rings = [to_px(r) for r in f.rings]
            layers.area(rings, im.field_colour(f.fid), im.FIELD, int(hash_unit(f.fid, 9) * 255))
        elif f.kind in im.AREA_BASE:
            rgb, mat = im.AREA_BASE[f.kind]
            layers.area([to_px(r) for r in f.rings], im.jitter(rgb, f.fid, 0.08), mat)
        elif f.kind == "river":
            layers.line(to_px(f.rings[0]), px(f.size_m), im.AREA_BASE["water"][0], im.WATER)
        elif f.kind == "rail":
            pts = to_px(f.rings[0])
            layers.line(pts, px(3.2), im.BALLAST_COLOUR, im.BALLAST)
            if px(1.5) >= 2:
                for side in (-0.72, 0.72):
                    stroke(layers.d["col"], _offset(pts, px(side)), px(0.12), im.RAIL_COLOUR)
    _draw_roads(layers, roads, frame)
    for f in feats:
        if f.kind in ("tree", "tree_row"):
            _draw_crowns(layers, f, frame, sun)


def _draw_roads(layers: _Layers, roads: list[Feature], frame: Frame) -> None:
    px = frame.px
    for f in roads:
        rgb, mat = im.ROAD_BASE[f.kind]
        layers.line(frame.to_canvas(f.rings[0]), px(st.ROAD_WIDTH_M[f.kind]), rgb, mat)
    if frame.z < 17:
        return
    for f in roads:  # markings last, so crossings do not cut them
        if f.kind in ("road:footway", "road:service"):
            continue
        pts = frame.to_canvas(f.rings[0])
        w = max(1.0, px(0.15))
        for d in dashes(pts, px(3.0), px(6.0)):
            layers.line(d, w, im.MARKING_COLOUR, im.MARKING)
        if f.kind in ("road:primary", "road:secondary") and frame.z >= 18:
            edge = px(st.ROAD_WIDTH_M[f.kind] / 2 - 0.6)
            for side in (-edge, edge):
                layers.line(_offset(pts, side), w, im.MARKING_COLOUR, im.MARKING)


def _draw_crowns(layers: _Layers, f: Feature, frame: Frame, sun: np.ndarray) -> None:
    pts = frame.to_canvas(f.rings[0])
    if f.kind == "tree_row":  # a crown every 6 m along the row
        centres = [d[0] for d in dashes(pts, 1e-6, frame.px(6.0))]
        radii = [3.0] * len(centres)
    else:
        centres, radii = [pts[0]], [f.size_m or 3.5]
    d = layers.d
    for i, ((x, y), r_m) in enumerate(zip(centres, radii, strict=True)):
        r = frame.px(r_m)
        h = 2.5 * r_m + 4
        sx, sy = sun * h * SHADOW_PER_M
        d["shadow"].ellipse((x + sx - r, y + sy - r, x + sx + r, y + sy + r), fill=255)
        rgb = im.jitter(im.CROWN_COLOUR, f.fid + i, 0.15)
        for k, frac in enumerate((1.0, 0.66, 0.33)):  # stepped dome, smoothed by the blur
            rr = r * frac
            box = (x - rr, y - rr, x + rr, y + rr)
            d["height"].ellipse(box, fill=int(4 * (h - 3 + 1.5 * k)))
            if k == 0:
                d["col"].ellipse(box, fill=rgb)
                d["mat"].ellipse(box, fill=im.CROWN)


def _compose(layers: _Layers, frame: Frame) -> np.ndarray:
    ss = frame.ss
    gx, gy = frame.pixel_centres()
    ppm = 1.0 / frame.ground_mpp

    def up(a: np.ndarray) -> np.ndarray:  # output-pixel noise onto the supersampled canvas
        return np.repeat(np.repeat(a, ss, axis=0), ss, axis=1)

    mat = np.asarray(layers.mat)
    amp = im.TEXTURE[mat]
    tex = 1.0 + amp[..., 0] * up(fbm(gx, gy, ppm, [20, 45, 90], 3))
    tex += amp[..., 1] * up(fbm(gx, gy, ppm, [2.5, 5, 9], 4))
    tex += amp[..., 2] * up(fbm(gx, gy, ppm, [0.6, 1.2], 5))
    tex += amp[..., 3] * up(pixel_grain(frame.z, gx, gy, 6))

    field = mat == im.FIELD
    if field.any():  # furrows: stripes at a per-field angle, in ground metres
        theta = np.asarray(layers.var).astype(np.float32) * (np.pi / 255)
        h, w = theta.shape
        xs = (np.arange(w) + 0.5) / ss / ppm  # metres from the canvas corner (float32-safe)...
        ys = (np.arange(h) + 0.5) / ss / ppm
        x0, y0 = (gx[0] - 0.5) / ppm, (gy[0] - 0.5) / ppm  # ...plus a global phase: no seams
        phase = (x0 * np.cos(theta) + y0 * np.sin(theta)) % 6.0
        arg = xs[None, :] * np.cos(theta) + ys[:, None] * np.sin(theta) + phase
        fade = np.clip((6.0 * ppm - 2.0) / 4.0, 0.0, 1.0)
        tex += np.where(field, 0.12 * fade * np.sin(arg * (2 * np.pi / 6.0)), 0.0)

    # Shading from a blurred height field (roof bevels, crown domes), light from the south-west.
    hgt = np.asarray(layers.height.filter(ImageFilter.BoxBlur(1.5 * ss)), dtype=np.float32)
    dy, dx = np.gradient(hgt)
    shade = np.clip(1.0 + 0.05 * (-dx * SUN[0] - dy * SUN[1]) * 2 / ss, 0.6, 1.35)
    shadow = np.asarray(layers.shadow.filter(ImageFilter.BoxBlur(ss)), dtype=np.float32) / 255
    shadow *= np.asarray(layers.height) == 0  # shadows fall on the ground, not on roofs

    # Per-area variation: slow changes in brightness and warmth over hundreds of metres.
    bright = 1.0 + 0.08 * up(fbm(gx, gy, ppm, [400, 900], 1))
    warm = 0.05 * up(fbm(gx, gy, ppm, [500, 1200], 2))

    k = (tex * shade * (1.0 - 0.5 * shadow) * bright)[..., None]
    rgb = np.asarray(layers.col, dtype=np.float32) * k
    rgb[..., 0] *= 1 + warm
    rgb[..., 2] *= 1 - warm
    out = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    return frame.crop(np.array(reduce(out, ss)))


def render_imagery(index: FeatureIndex, frame: Frame, ground: tuple[int, int, int]) -> np.ndarray:
    """(height, width, 3) uint8 imagery of the frame; `ground` colours land with no feature."""
    layers = _Layers(frame, ground)
    _draw(layers, index.query(frame.bounds_m(QUERY_PAD_M), st.DRAW_ORDER), frame)
    return _compose(layers, frame)
