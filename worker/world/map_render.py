"""The truth map: a clean flat cartographic rendering with zoom-dependent generalisation."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from worker.world import style as st
from worker.world.features import Feature, FeatureIndex, ring_area
from worker.world.raster import Frame, dashes, fill_polygon, reduce, stroke

QUERY_PAD_M = 40.0  # ground metres: widest road half-width plus safety


def _area_px(f: Feature, frame: Frame) -> float:
    return abs(ring_area(f.rings[0])) / frame.mpp**2


def _visible(f: Feature, z: int, frame: Frame) -> bool:
    if z < st.MIN_ZOOM.get(f.kind, 99):
        return False
    return not (f.geom == "polygon" and _area_px(f, frame) < st.MIN_AREA_PX)


def render_map(index: FeatureIndex, frame: Frame) -> np.ndarray:
    """(height, width, 3) uint8 truth map of the frame."""
    z, ss = frame.z, frame.ss
    canvas = Image.new("RGB", frame.size, st.BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    feats = [
        f for f in index.query(frame.bounds_m(QUERY_PAD_M), st.DRAW_ORDER) if _visible(f, z, frame)
    ]
    to_px = frame.to_canvas

    blocks = None
    if st.BUILDING_BLOCK_ZOOM <= z < 17:
        blocks = Image.new("L", frame.size, 0)
    block_draw = ImageDraw.Draw(blocks) if blocks is not None else None

    for f in feats:
        if f.geom != "polygon":
            continue
        rings = [to_px(r) for r in f.rings]
        if f.kind == "building":
            if z < st.BUILDING_BLOCK_ZOOM:
                fill_polygon([(draw, st.BUILTUP)], rings)
            elif block_draw is not None:
                fill_polygon([(block_draw, 255)], rings)
            else:
                fill_polygon([(draw, st.BUILDING)], rings)
                if z >= st.BUILDING_SINGLE_ZOOM:
                    for r in rings:
                        draw.line([tuple(p) for p in r.tolist()], fill=st.BUILDING_LINE, width=ss)
        elif f.kind in st.AREA_FILL:
            fill_polygon([(draw, st.AREA_FILL[f.kind])], rings)

    if blocks is not None:
        # Generalise buildings into blocks: a morphological closing merges neighbours. The
        # filters are local and the canvas margin is wider than them, so tiles still join.
        k = 7 if z == 15 else 5
        merged = blocks.filter(ImageFilter.MaxFilter(k)).filter(ImageFilter.MinFilter(k))
        canvas.paste(st.BUILDING, (0, 0), merged)

    lines = [f for f in feats if f.geom == "line"]
    for f in lines:
        pts = to_px(f.rings[0])
        if f.kind == "river":
            stroke(draw, pts, max(frame.px(f.size_m), ss), st.WATER)
        elif f.kind == "tree_row":
            stroke(draw, pts, frame.px(6.0), st.TREE)
        elif f.kind == "rail":
            w = (1.5 if z < 16 else 3.0) * ss
            stroke(draw, pts, w, st.RAIL)
            if z >= 16:
                for d in dashes(pts, 6.0 * ss, 6.0 * ss):
                    stroke(draw, d, max(1.0, w / 3), st.ROAD_MINOR)

    roads = [f for f in lines if f.kind in st.ROAD_FILL]
    widths = {k: st.road_width_px(k, z, frame.ground_mpp) * ss for k in st.ROAD_KINDS}
    for f in roads:  # all casings under all fills, so junctions read as one network
        extra = st.casing_px(f.kind, z) * ss
        if extra:
            stroke(draw, to_px(f.rings[0]), widths[f.kind] + extra, st.CASING)
    for f in roads:
        stroke(draw, to_px(f.rings[0]), widths[f.kind], st.ROAD_FILL[f.kind])

    for f in feats:
        if f.kind == "tree":
            x, y = to_px(f.rings[0])[0]
            rad = frame.px(f.size_m)
            draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=st.TREE)

    return frame.crop(np.array(reduce(canvas, ss)))
