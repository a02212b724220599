"""`python -m worker.world.preview OUT_DIR`: imagery beside truth over Helsinki at z14, z16 and
z18 (the pictures in docs/img/), plus per-tile render timings."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image

from worker.world import world_for

CENTRE = (24.9445, 60.1712)  # Helsinki: railway station, Kluuvi, Esplanadi
VIEWS = {14: 2, 16: 2, 18: 2}  # zoom -> tiles per side


def preview(out: Path) -> None:
    world = world_for("helsinki")
    out.mkdir(parents=True, exist_ok=True)
    for z, n in VIEWS.items():
        t = mercantile.tile(*CENTRE, z)
        x0, y0 = t.x - n // 2 + 1, t.y - n // 2 + 1
        px, py, size = x0 * 256, y0 * 256, n * 256
        if z == 14:  # at z14 the extract spans ~2 tiles: frame the tiles it touches
            px, py = (t.x - 1) * 256 + 128, (t.y - 1) * 256 + 128
        rgb, _ = world.render_imagery(z, px, py, size, size)
        truth = world.render_map(z, px, py, size, size)
        gap = np.full((size, 6, 3), 255, np.uint8)
        side_by_side = Image.fromarray(np.hstack([rgb, gap, truth]))
        # 256-colour palette keeps the docs pictures small (< 300 KB) at little visible cost.
        side_by_side.quantize(256, dither=Image.Dither.NONE).save(
            out / f"world_z{z}.png", optimize=True
        )


def timings(zooms: range = range(14, 19), n: int = 8) -> dict[int, dict[str, float]]:
    """Median milliseconds per 256 px tile (imagery + map) over n tiles per zoom."""
    world = world_for("helsinki")
    world.imagery_tile(16, *mercantile.tile(*CENTRE, 16)[:2])  # warm caches and imports
    out = {}
    for z in zooms:
        t = mercantile.tile(*CENTRE, z)
        times: dict[str, list[float]] = {"imagery": [], "map": []}
        for i in range(n):
            x, y = t.x + i % 3 - 1, t.y + i // 3 - 1
            t0 = time.perf_counter()
            world.imagery_tile(z, x, y)
            t1 = time.perf_counter()
            world.map_tile(z, x, y)
            times["imagery"].append(t1 - t0)
            times["map"].append(time.perf_counter() - t1)
        out[z] = {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}
    return out


if __name__ == "__main__":
    preview(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
    for z, ms in timings().items():
        print(f"z{z}: imagery {ms['imagery']} ms, map {ms['map']} ms per tile")
