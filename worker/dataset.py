"""Training-set builder: CSCMG layout (256 px tiles + cascade reference crops) plus 512 px block
samples, from the synthetic world, any layer imagery source with labels rendered in our style,
or XYZ map services; resumable, atomic writes.

Each pair carries a knowledge mask (`mask_256/`, `mask_512/`, see worker/world/labels.py): where
the truth is known, where only "none of the labelled classes" is known, and where nothing is."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import httpx
import mercantile
import numpy as np
from PIL import Image

from app.imagery_config import DirImageryConfig
from app.store import write_atomic
from app.tiles import TILE_SIZE
from model.reference import prepare_reference
from worker.blocks import png_bytes
from worker.imagery import open_source
from worker.imagery.base import ImagerySource, decode_tile
from worker.world import World
from worker.world.areas import RealSite, get_site
from worker.world.labels import UNKNOWN, LabelMap, known_where
from worker.world.noise import hash_unit

log = logging.getLogger(__name__)

DATASET_VERSION = 2  # 2: knowledge masks
DIRS_256 = {"rs": "rs_256", "map": "map_256", 2: "ref_scale_2_256", 4: "ref_scale_4_256",
            "mask": "mask_256"}  # fmt: skip
DIRS_512 = {"rs": "rs_512", "map": "map_512", 2: "ref_2_512", 4: "ref_4_512", "mask": "mask_512"}
Key = tuple[int, int, int]  # (z, x, y)


class TileProvider(Protocol):
    """Where a layer of the dataset comes from: (rgb (256,256,3) uint8, mask) or None. For
    imagery the mask is bool (data); for maps it is the knowledge mask (uint8, labels.py)."""

    def tile(self, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray] | None: ...


@dataclass
class WorldImagery:
    world: World

    def tile(self, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray] | None:
        rgb, mask = self.world.render_imagery(z, x * TILE_SIZE, y * TILE_SIZE, TILE_SIZE, TILE_SIZE)
        return (rgb, mask) if mask.any() else None


@dataclass
class WorldMap:
    world: World

    def tile(self, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray] | None:
        mask = self.world.mask(z, x * TILE_SIZE, y * TILE_SIZE, TILE_SIZE, TILE_SIZE)
        rgb = self.world.render_map(z, x * TILE_SIZE, y * TILE_SIZE, TILE_SIZE, TILE_SIZE)
        return (rgb, known_where(mask)) if mask.any() else None


@dataclass
class SourceTiles:
    """Imagery tiles from any layer imagery source (xyz, dir, geotiff, world)."""

    source: ImagerySource

    def tile(self, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray] | None:
        mosaic = self.source.read(z, x, y, 1, 1)
        return None if mosaic.empty else (mosaic.rgb, mosaic.mask)


@dataclass
class UrlTiles:
    """An XYZ service, `https://host/{z}/{x}/{y}.png` (`{-y}` for TMS rows)."""

    template: str
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=20.0))

    def tile(self, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray] | None:
        # {-y} first: str.format would read it as a field named "-y" and raise KeyError.
        url = self.template.replace("{-y}", str((1 << z) - 1 - y)).format(z=z, x=x, y=y)
        r = self.client.get(url)
        if r.status_code in (204, 404):
            return None
        r.raise_for_status()
        rgb, mask = decode_tile(r.content)
        return rgb, known_where(mask)


def open_site(name: str) -> tuple[RealSite, ImagerySource, LabelMap]:
    """A real site's imagery source and building labels (KeyError for an unknown name)."""
    site = get_site(name)
    source = open_source(DirImageryConfig(type="dir", path=site.imagery))
    return site, source, LabelMap.from_file(site.labels, ("building",))


@dataclass
class DatasetSpec:
    out: Path
    bbox: tuple[float, float, float, float]  # lon/lat W, S, E, N
    zooms: range
    imagery: TileProvider
    maps: TileProvider
    area: str = "custom"
    split: str = "train"  # "train" (train + val lists), "heldout" (test list) or "all"
    min_coverage: float = 0.5  # share of a tile (or block) that must have imagery
    val_fraction: float = 0.1


def write_png(path: Path, image: Image.Image) -> None:
    """Atomic: a crash leaves either the old file or none, never half a PNG."""
    write_atomic(path, png_bytes(image))


def ref_crop(ancestor: np.ndarray, key: Key, levels: int) -> Image.Image:
    """The part of an ancestor tile (`levels` zooms up) covering tile `key`, upsampled to 256."""
    z, x, y = key
    n = 1 << levels
    size = TILE_SIZE // n
    cx, cy = (x % n) * size, (y % n) * size
    crop = Image.fromarray(ancestor[cy : cy + size, cx : cx + size])
    return crop.resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BILINEAR)


def _is_val(key: Key, fraction: float) -> bool:
    # By the z-2 ancestor, so a val tile's siblings and block mates are val too (no leakage).
    z, x, y = key
    return bool(hash_unit(z - 2, x >> 2, y >> 2, 77) < fraction)


class _Builder:
    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.cache = lru_cache(maxsize=512)(self._fetch)

    def _fetch(self, which: str, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray] | None:
        src = self.spec.imagery if which == "rs" else self.spec.maps
        return src.tile(z, x, y)

    def rgb(self, which: str, key: Key) -> np.ndarray | None:
        got = self.cache(which, *key)
        return None if got is None else got[0]

    def coverage(self, key: Key) -> float:
        """Share of the tile with both imagery and some knowledge of the map."""
        rs, mp = self.cache("rs", *key), self.cache("map", *key)
        if rs is None or mp is None:
            return 0.0
        return float((rs[1] & (mp[1] > UNKNOWN)).mean())

    def knowledge(self, key: Key) -> np.ndarray:
        got = self.cache("map", *key)
        assert got is not None  # write_* only run where coverage() found the map
        return got[1]

    def tiles(self, z: int) -> list[Key]:
        return [(t.z, t.x, t.y) for t in mercantile.tiles(*self.spec.bbox, zooms=[z])]

    def write_tile(self, key: Key) -> bool:
        """All four 256 px images of one tile; False when it lacks data or ancestors."""
        out, (z, x, y) = self.spec.out, key
        name = f"{z}_{x}_{y}.png"
        paths = {k: out / d / name for k, d in DIRS_256.items()}
        if all(p.exists() for p in paths.values()):
            return True
        rs, mp = self.rgb("rs", key), self.rgb("map", key)
        ref2 = self.rgb("map", (z - 1, x >> 1, y >> 1))
        ref4 = self.rgb("map", (z - 2, x >> 2, y >> 2))
        if rs is None or mp is None or ref2 is None or ref4 is None:
            return False
        images = {"rs": Image.fromarray(rs), "map": Image.fromarray(mp),
                  2: ref_crop(ref2, key, 1), 4: ref_crop(ref4, key, 2),
                  "mask": Image.fromarray(self.knowledge(key))}  # fmt: skip
        for k, p in paths.items():
            if not p.exists():
                write_png(p, images[k])
        return True

    def write_block(self, parent: Key) -> bool:
        """The 512 px block of `parent` (its 4 children) with its 2X and 4X references."""
        out, (pz, px, py) = self.spec.out, parent
        name = f"{pz}_{px}_{py}.png"
        paths = {k: out / d / name for k, d in DIRS_512.items()}
        if all(p.exists() for p in paths.values()):
            return True
        kids = [(pz + 1, 2 * px + dx, 2 * py + dy) for dy in (0, 1) for dx in (0, 1)]
        rs = [self.rgb("rs", k) for k in kids]
        mp = [self.rgb("map", k) for k in kids]
        p_map = self.rgb("map", parent)
        gp_map = self.rgb("map", (pz - 1, px >> 1, py >> 1))
        if p_map is None or gp_map is None or any(a is None for a in [*rs, *mp]):
            return False

        def canvas(parts: list) -> Image.Image:
            return Image.fromarray(np.vstack([np.hstack(parts[:2]), np.hstack(parts[2:])]))

        images = {
            "rs": canvas(rs),
            "map": canvas(mp),
            2: prepare_reference(Image.fromarray(p_map), 2),
            4: prepare_reference(Image.fromarray(gp_map), 4, (px & 1, py & 1)),
            "mask": canvas([self.knowledge(k) for k in kids]),
        }
        for k, p in paths.items():
            if not p.exists():
                write_png(p, images[k])
        return True


def plan(spec: DatasetSpec) -> list[tuple[str, Key]]:
    """Every unit of work: ("tile", key) and ("block", parent key), coarse zooms first."""
    b = _Builder(spec)
    work: list[tuple[str, Key]] = []
    for z in spec.zooms:
        tiles = b.tiles(z)
        work += [("tile", k) for k in tiles]
        work += [("block", p) for p in sorted({(z - 1, x >> 1, y >> 1) for _, x, y in tiles})]
    return work


def build(spec: DatasetSpec, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the dataset; `progress(done, total)` after each unit. Returns the manifest."""
    b = _Builder(spec)
    work = plan(spec)
    lists: dict[str, list[str]] = {}
    for i, (kind, key) in enumerate(work):
        z, x, y = key
        dirs = DIRS_256 if kind == "tile" else DIRS_512
        if all((spec.out / d / f"{z}_{x}_{y}.png").exists() for d in dirs.values()):
            ok = True  # written by an earlier run: resume without rendering anything
        elif kind == "tile":
            ok = b.coverage(key) >= spec.min_coverage and b.write_tile(key)
        else:
            kids = [(z + 1, 2 * x + dx, 2 * y + dy) for dy in (0, 1) for dx in (0, 1)]
            cover = float(np.mean([b.coverage(k) for k in kids]))
            ok = cover >= spec.min_coverage and b.write_block(key)
        if ok:
            lists.setdefault(_list_name(spec, kind, key), []).append(f"{z}_{x}_{y}.png")
        if progress:
            progress(i + 1, len(work))
    for name, rows in lists.items():
        _write_csv(spec.out / f"{name}.csv", rows)
    manifest = {
        "version": DATASET_VERSION,
        "area": spec.area,
        "bbox": list(spec.bbox),
        "zooms": [spec.zooms.start, spec.zooms.stop - 1],
        "split": spec.split,
        "min_coverage": spec.min_coverage,
        # Labels of some classes only: the colours a NOT_LABELLED pixel must not take.
        "labelled_colours": [list(c) for c in getattr(spec.maps, "partial_colours", [])],
        "counts": {name: len(rows) for name, rows in sorted(lists.items())},
        "blocks": "512 px blocks are named by their parent tile {z-1}_{x}_{y}; children at z",
    }
    (spec.out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _list_name(spec: DatasetSpec, kind: str, key: Key) -> str:
    if spec.split == "heldout":
        split = "test"
    else:
        z, x, y = key if kind == "tile" else (key[0] + 1, 2 * key[1], 2 * key[2])
        split = "val" if _is_val((z, x, y), spec.val_fraction) else "train"
    return split if kind == "tile" else f"blocks_{split}"


def _write_csv(path: Path, rows: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["tilename"])
    w.writerows([r] for r in rows)
    write_atomic(path, buf.getvalue().encode())
