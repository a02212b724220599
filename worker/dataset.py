"""Training-set builder: CSCMG layout (256 px tiles + cascade reference crops) plus 512 px block
samples, from the synthetic world, any layer imagery source with labels rendered in our style,
or map tiles read through an imagery source (e.g. an XYZ map service); resumable, atomic writes.
Its cascade references are cut by worker/reference.py, the code that cuts them when serving.

Each pair carries a knowledge mask (`mask_256/`, `mask_512/`, see worker/world/labels.py): where
the truth is known, where only "none of the labelled classes" is known, and where nothing is."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import mercantile
import numpy as np
from PIL import Image

from app.imagery_config import DirImageryConfig
from app.store import write_atomic
from app.tiles import TILE_SIZE, Block, Tile, parent_of
from worker.blocks import png_bytes
from worker.imagery import open_source
from worker.imagery.base import ImagerySource
from worker.reference import MissingReference, Reference, reference_for, tile_reference
from worker.world import World
from worker.world.areas import RealSite, get_site
from worker.world.labels import UNKNOWN, LabelMap, known_where
from worker.world.noise import hash_unit

log = logging.getLogger(__name__)

DATASET_VERSION = 2  # 2: knowledge masks
DIRS_256: dict[str | int, str] = {"rs": "rs_256", "map": "map_256", 2: "ref_scale_2_256",
                                  4: "ref_scale_4_256", "mask": "mask_256"}  # fmt: skip
DIRS_512: dict[str | int, str] = {"rs": "rs_512", "map": "map_512", 2: "ref_2_512",
                                  4: "ref_4_512", "mask": "mask_512"}  # fmt: skip


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
    """Tiles from any layer imagery source (xyz, dir, geotiff, world). As imagery the mask is
    where it has data; as map truth (`maps=True`, e.g. an XYZ map service) the map is known
    wherever the source has data."""

    source: ImagerySource
    maps: bool = False

    def tile(self, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray] | None:
        mosaic = self.source.read(z, x, y, 1, 1)
        if mosaic.empty:
            return None
        return mosaic.rgb, known_where(mosaic.mask) if self.maps else mosaic.mask


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


def _is_val(tile: Tile, fraction: float) -> bool:
    # By the z-2 ancestor, so a val tile's siblings and block mates are val too (no leakage).
    return bool(hash_unit(tile.z - 2, tile.x >> 2, tile.y >> 2, 77) < fraction)


def _images(refs: dict[int, Reference]) -> dict[str | int, Image.Image]:
    """span -> the reference's image (cut from a stored ancestor, so never None)."""
    out: dict[str | int, Image.Image] = {}
    for span, ref in refs.items():
        assert ref.image is not None
        out[span] = ref.image
    return out


def _name(tile: Tile) -> str:
    return f"{tile.z}_{tile.x}_{tile.y}.png"


class _Builder:
    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.cache = lru_cache(maxsize=512)(self._fetch)

    def _fetch(self, which: str, tile: Tile) -> tuple[np.ndarray, np.ndarray] | None:
        src = self.spec.imagery if which == "rs" else self.spec.maps
        return src.tile(tile.z, tile.x, tile.y)

    def rgb(self, which: str, tile: Tile) -> np.ndarray | None:
        got = self.cache(which, tile)
        return None if got is None else got[0]

    def map_image(self, tile: Tile) -> Image.Image | None:
        """The true map tile: what references are cut from (a `MapTileReader`)."""
        rgb = self.rgb("map", tile)
        return None if rgb is None else Image.fromarray(rgb)

    def coverage(self, tile: Tile) -> float:
        """Share of the tile with both imagery and some knowledge of the map."""
        rs, mp = self.cache("rs", tile), self.cache("map", tile)
        if rs is None or mp is None:
            return 0.0
        return float((rs[1] & (mp[1] > UNKNOWN)).mean())

    def knowledge(self, tile: Tile) -> np.ndarray:
        got = self.cache("map", tile)
        assert got is not None  # write_* only run where coverage() found the map
        return got[1]

    def tiles(self, z: int) -> list[Tile]:
        return [Tile(t.x, t.y, t.z) for t in mercantile.tiles(*self.spec.bbox, zooms=[z])]

    def write_tile(self, tile: Tile) -> bool:
        """All four 256 px images of one tile; False when it lacks data or ancestors."""
        paths = {k: self.spec.out / d / _name(tile) for k, d in DIRS_256.items()}
        if all(p.exists() for p in paths.values()):
            return True
        rs, mp = self.rgb("rs", tile), self.rgb("map", tile)
        if rs is None or mp is None:
            return False
        try:
            refs = {span: tile_reference(tile, span, self.map_image) for span in (2, 4)}
        except MissingReference:
            return False
        images = {"rs": Image.fromarray(rs), "map": Image.fromarray(mp), **_images(refs),
                  "mask": Image.fromarray(self.knowledge(tile))}  # fmt: skip
        for k, p in paths.items():
            if not p.exists():
                write_png(p, images[k])
        return True

    def write_block(self, block: Block) -> bool:
        """The 512 px block (the 4 children of its parent) with its 2X and 4X references."""
        paths = {k: self.spec.out / d / _name(block.parent) for k, d in DIRS_512.items()}
        if all(p.exists() for p in paths.values()):
            return True
        rs = [self.rgb("rs", k) for k in block.children]
        mp = [self.rgb("map", k) for k in block.children]
        if any(a is None for a in [*rs, *mp]):
            return False
        try:  # root zoom 0: the data set has every ancestor's truth
            refs = {span: reference_for(block, 0, span, self.map_image) for span in (2, 4)}
        except MissingReference:
            return False

        def canvas(parts: list) -> Image.Image:
            return Image.fromarray(np.vstack([np.hstack(parts[:2]), np.hstack(parts[2:])]))

        images = {"rs": canvas(rs), "map": canvas(mp), **_images(refs),
                  "mask": canvas([self.knowledge(k) for k in block.children])}  # fmt: skip
        for k, p in paths.items():
            if not p.exists():
                write_png(p, images[k])
        return True


Work = tuple[str, Tile]  # ("tile", the tile) or ("block", the block's parent tile)


def plan(spec: DatasetSpec) -> list[Work]:
    """Every unit of work: ("tile", tile) and ("block", parent tile), coarse zooms first."""
    b = _Builder(spec)
    work: list[Work] = []
    for z in spec.zooms:
        tiles = b.tiles(z)
        work += [("tile", t) for t in tiles]
        parents = sorted({parent_of(t) for t in tiles}, key=lambda p: (p.z, p.x, p.y))
        work += [("block", p) for p in parents]
    return work


def build(spec: DatasetSpec, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write the dataset; `progress(done, total)` after each unit. Returns the manifest."""
    b = _Builder(spec)
    work = plan(spec)
    lists: dict[str, list[str]] = {}
    for i, (kind, tile) in enumerate(work):
        dirs = DIRS_256 if kind == "tile" else DIRS_512
        if all((spec.out / d / _name(tile)).exists() for d in dirs.values()):
            ok = True  # written by an earlier run: resume without rendering anything
        elif kind == "tile":
            ok = b.coverage(tile) >= spec.min_coverage and b.write_tile(tile)
        else:
            block = Block(spec.area, tile.z, tile.x, tile.y)
            cover = float(np.mean([b.coverage(k) for k in block.children]))
            ok = cover >= spec.min_coverage and b.write_block(block)
        if ok:
            lists.setdefault(_list_name(spec, kind, tile), []).append(_name(tile))
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


def _list_name(spec: DatasetSpec, kind: str, tile: Tile) -> str:
    if spec.split == "heldout":
        split = "test"
    else:
        first = tile if kind == "tile" else Block(spec.area, tile.z, tile.x, tile.y).children[0]
        split = "val" if _is_val(first, spec.val_fraction) else "train"
    return split if kind == "tile" else f"blocks_{split}"


def _write_csv(path: Path, rows: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["tilename"])
    w.writerows([r] for r in rows)
    write_atomic(path, buf.getvalue().encode())
