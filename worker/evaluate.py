"""Evaluation harness: cascade-generate an area exactly as the service does (references are the
model's own outputs) and score it against the truth, beside trivial floors.

Two kinds of area: a world area (the truth is the whole rendered map: PSNR, SSIM, class IoU) and
a real site (real imagery, OSM labels of some classes over part of it: IoU of the labelled
classes where the labels say anything, worker/world/labels.py)."""

from __future__ import annotations

import functools
import json
import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image

from app.tiles import TILE_SIZE, Tile
from model import Generator, metrics
from model.request import BLOCK_SIZE
from worker import blocks
from worker.dataset import open_site
from worker.imagery import ImagerySource
from worker.imagery.world import WorldSource
from worker.world import CLASS_COLOURS, CLASSES, get_area, world_for
from worker.world.areas import REAL_SITES, area_or_site, intersect, is_real_site
from worker.world.labels import KNOWN, UNKNOWN, known_where

log = logging.getLogger(__name__)

LAYER = "eval"
PANEL_MAX_PX = 1024  # side-by-side mosaics are shrunk to this width per panel


@dataclass
class EvalSpec:
    out: Path
    model: str = "demo"
    area: str = "helsinki-heldout"
    zooms: range = range(14, 19)
    bbox: tuple[float, float, float, float] | None = None  # cuts the area (never widens it)
    reference_span: int = 2  # as the demo layer (app.settings.demo_layer)
    steps: int | None = None
    strength: float = 1.0
    context_margin: int = 64


@dataclass
class Target:
    """What is evaluated: imagery, the truth of a 512 px block, the extent, the root zoom."""

    name: str
    split: str
    bbox: tuple[float, float, float, float]
    root_zoom: int
    source: ImagerySource
    # (zoom, left px, top px) -> the block's truth map (512, 512, 3) and knowledge (512, 512)
    truth: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]
    classes: tuple[str, ...]  # the labelled classes; all of them for a world area

    @property
    def partial(self) -> bool:
        return set(self.classes) != set(CLASSES)


def target_for(spec: EvalSpec) -> Target:
    if is_real_site(spec.area):
        site, source, labels = open_site(spec.area)
        box = intersect(labels.extent, spec.bbox)

        def label_truth(z: int, left: int, top: int) -> tuple[np.ndarray, np.ndarray]:
            x, y = left // TILE_SIZE, top // TILE_SIZE
            quads = [labels.tile(z, x + dx, y + dy) for dy in (0, 1) for dx in (0, 1)]
            blank = (np.zeros((TILE_SIZE, TILE_SIZE, 3), np.uint8),
                     np.full((TILE_SIZE, TILE_SIZE), UNKNOWN, np.uint8))  # fmt: skip
            rgb, known = zip(*[q or blank for q in quads], strict=True)
            return _join(list(rgb)), _join(list(known))

        return Target(f"real:{site.name}", site.split, box, site.root_zoom, source,
                      label_truth, labels.classes)  # fmt: skip
    area = get_area(spec.area)
    world = world_for(area, spec.bbox)

    def world_truth(z: int, left: int, top: int) -> tuple[np.ndarray, np.ndarray]:
        known = world.mask(z, left, top, 512, 512)
        rgb = world.render_map(z, left, top, 512, 512)
        return rgb, known_where(known)

    return Target(spec.area, area.split, world.bbox, area.root_zoom, WorldSource(world),
                  world_truth, CLASSES)  # fmt: skip


def _join(quads: list[np.ndarray]) -> np.ndarray:
    return np.vstack([np.hstack(quads[:2]), np.hstack(quads[2:])])


@dataclass
class CascadeRun:
    """Everything generated, per tile, as RGB arrays plus the validity mask."""

    generated: dict[Tile, np.ndarray] = field(default_factory=dict)
    reference: dict[Tile, np.ndarray] = field(default_factory=dict)  # what the model received
    truth: dict[Tile, np.ndarray] = field(default_factory=dict)
    imagery: dict[Tile, np.ndarray] = field(default_factory=dict)
    mask: dict[Tile, np.ndarray] = field(default_factory=dict)  # imagery and some knowledge
    knowledge: dict[Tile, np.ndarray] = field(default_factory=dict)
    images: dict[Tile, Image.Image] = field(default_factory=dict)  # RGBA, as the store holds
    block_seconds: list[float] = field(default_factory=list)


def _quarters(a: np.ndarray) -> list[np.ndarray]:
    t = TILE_SIZE
    return [a[:t, :t], a[:t, t:], a[t:, :t], a[t:, t:]]


def run_cascade(
    spec: EvalSpec,
    generator: Generator,
    progress: Callable[[int, int], None] | None = None,
    target: Target | None = None,
) -> CascadeRun:
    """Generate every block from the area's root zoom down to the deepest evaluated zoom."""
    target = target or target_for(spec)
    source, root = target.source, target.root_zoom
    plan = [b for z in range(root, spec.zooms.stop) for b in
            blocks.blocks_covering(LAYER, target.bbox, z)]  # fmt: skip
    c = CascadeRun()

    def read(tile: Tile) -> Image.Image | None:
        return c.images.get(tile)

    margin = spec.context_margin
    for i, block in enumerate(plan):
        z = block.child_zoom
        drawn = blocks.draw_block(block, source, generator, read, root, spec.reference_span, margin)
        imagery, tiles = drawn.imagery, drawn.tiles
        if drawn.request is not None:
            c.block_seconds.append(drawn.seconds)
            truth, known = target.truth(z, 2 * block.x * TILE_SIZE, 2 * block.y * TILE_SIZE)
        else:  # no imagery: nothing generated, nothing scored, no truth to render
            truth = np.zeros((512, 512, 3), np.uint8)
            known = np.full((512, 512), UNKNOWN, np.uint8)
        ref, cut = None, slice(margin, margin + BLOCK_SIZE)  # the block inside its frame
        if drawn.reference.image is not None:
            ref = np.asarray(drawn.reference.image.convert("RGB"))[cut, cut]
        valid = imagery.mask & (known > UNKNOWN)
        parts = zip(block.children, tiles, _quarters(imagery.rgb), _quarters(valid),
                    _quarters(truth), _quarters(known), strict=True)  # fmt: skip
        for k, (tile, img, rs, m, tr, kn) in enumerate(parts):
            c.images[tile] = img
            c.generated[tile] = np.asarray(img.convert("RGB"))
            c.imagery[tile], c.mask[tile], c.truth[tile], c.knowledge[tile] = rs, m, tr, kn
            if ref is not None:
                c.reference[tile] = _quarters(ref)[k]
        if progress:
            progress(i + 1, len(plan))
    return c


def _mosaic(tiles: dict[Tile, np.ndarray], keys: list[Tile], fill: int = 0) -> np.ndarray:
    """Tiles of one zoom on one canvas starting at an even column/row (block-aligned)."""
    x0 = min(t.x for t in keys) & ~1
    y0 = min(t.y for t in keys) & ~1
    w = (max(t.x for t in keys) - x0 + 2) // 2 * 2
    h = (max(t.y for t in keys) - y0 + 2) // 2 * 2
    sample = next(iter(tiles.values()))
    shape = (h * TILE_SIZE, w * TILE_SIZE, *sample.shape[2:])
    out = np.full(shape, fill, dtype=sample.dtype)
    for t in keys:
        if t in tiles:
            r, col = (t.y - y0) * TILE_SIZE, (t.x - x0) * TILE_SIZE
            out[r : r + TILE_SIZE, col : col + TILE_SIZE] = tiles[t]
    return out


def _scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    return {
        "psnr_y": metrics.psnr_y(pred, truth, mask),
        "ssim_y": metrics.ssim_y(pred, truth, mask),
        "iou": metrics.class_iou(pred, truth, CLASS_COLOURS, mask),
    }


def score(c: CascadeRun, zooms: range) -> dict:
    """Per-zoom metrics of the model and the floors; `overall` = unweighted mean over zooms."""
    per_zoom: dict[str, dict] = {}
    for z in zooms:
        keys = [t for t in c.generated if t.z == z and c.mask[t].any()]
        if not keys:
            continue
        gen, tru = _mosaic(c.generated, keys), _mosaic(c.truth, keys)
        mask = _mosaic(c.mask, keys, fill=False)
        flat = np.empty_like(tru)
        flat[:] = tru[mask].mean(axis=0).round().astype(np.uint8)
        ref_keys = [t for t in keys if t in c.reference]
        entry = {
            "tiles": len(keys),
            "model": _scores(gen, tru, mask),
            "floor_flat_mean": _scores(flat, tru, mask),
            "floor_reference": None,
            "seam_block": metrics.seam_strength(gen, kind="block", mask=mask),
            "seam_inner": metrics.seam_strength(gen, kind="inner", mask=mask),
            "seam_block_truth": metrics.seam_strength(tru, kind="block", mask=mask),
            "seam_inner_truth": metrics.seam_strength(tru, kind="inner", mask=mask),
            "cross_zoom_psnr": None,
            "cross_zoom_psnr_truth": None,
        }
        if len(ref_keys) == len(keys):  # the root zoom has no reference: no floor there
            entry["floor_reference"] = _scores(_mosaic(c.reference, keys), tru, mask)
        parents = {t: a for t, a in c.generated.items() if t.z == z - 1}
        if parents:
            kids = {(t.z, t.x, t.y): c.generated[t] for t in keys}
            entry["cross_zoom_psnr"] = metrics.cross_zoom_psnr(
                kids, {(t.z, t.x, t.y): a for t, a in parents.items()}
            )
            entry["cross_zoom_psnr_truth"] = metrics.cross_zoom_psnr(
                {(t.z, t.x, t.y): c.truth[t] for t in keys},
                {(t.z, t.x, t.y): c.truth[t] for t in parents},
            )
        per_zoom[str(z)] = entry
    return {"per_zoom": per_zoom, "overall": _overall(per_zoom)}


def _iou(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    union = np.count_nonzero((pred | truth) & mask)
    return np.count_nonzero(pred & truth & mask) / union if union else float("nan")


def _colour_codes(imagery: np.ndarray) -> np.ndarray:
    bins = (imagery // 32).astype(np.int64)  # 8 x 8 x 8 colour bins
    return (bins[..., 0] * 8 + bins[..., 1]) * 8 + bins[..., 2]


def colour_counts(
    imagery: np.ndarray, truth: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per colour bin: pixels of the class, and all pixels (inside `mask`)."""
    code = _colour_codes(imagery)
    return np.bincount(code[mask & truth], minlength=512), np.bincount(code[mask], minlength=512)


def colour_rule(imagery: np.ndarray, counts: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """A per-pixel colour classifier: a bin is the class where most of its pixels were."""
    hits, total = counts
    return (2 * hits > total)[_colour_codes(imagery)]


@functools.lru_cache(maxsize=8)
def training_colour_counts(z: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """colour_counts of class `name` over the labelled pixels of the real training sites (up to
    64 tiles spread over each site's labels: millions of pixels, seconds to read)."""
    hits, total = np.zeros(512, np.int64), np.zeros(512, np.int64)
    index = CLASSES.index(name)
    for site in REAL_SITES.values():
        if site.split != "train":
            continue
        _, source, labels = open_site(site.name)
        tiles = list(mercantile.tiles(*labels.extent, zooms=[z]))
        for t in tiles[:: max(1, len(tiles) // 64)]:
            got = labels.tile(t.z, t.x, t.y)
            imagery = source.read(t.z, t.x, t.y, 1, 1)
            if got is None or imagery.empty:
                continue
            truth = (got[1] == KNOWN) & (metrics.class_map(got[0], CLASS_COLOURS) == index)
            h, n = colour_counts(imagery.rgb, truth, imagery.mask & (got[1] > UNKNOWN))
            hits, total = hits + h, total + n
    return hits, total


def score_partial(c: CascadeRun, zooms: range, classes: tuple[str, ...]) -> dict:
    """Real sites: IoU of each labelled class over the pixels whose truth says anything (a
    NOT_LABELLED pixel counts as "not this class"), with the trivial floors beside it."""
    per_zoom: dict[str, dict] = {}
    for z in zooms:
        keys = [t for t in c.generated if t.z == z and c.mask[t].any()]
        if not keys:
            continue
        gen, mask = _mosaic(c.generated, keys), _mosaic(c.mask, keys, fill=False)
        # Scores need the valid pixels only, as one row (sparse sites make large mosaics).
        pixels = {name: _mosaic(tiles, keys)[mask][None] for name, tiles in (
            ("tru", c.truth), ("img", c.imagery), ("known", c.knowledge))}  # fmt: skip
        img, known = pixels["img"], pixels["known"]
        pred_class = metrics.class_map(gen[mask][None], CLASS_COLOURS)
        true_class = metrics.class_map(pixels["tru"], CLASS_COLOURS)
        ref_class = None
        if all(t in c.reference for t in keys):
            ref_class = metrics.class_map(_mosaic(c.reference, keys)[mask][None], CLASS_COLOURS)
        valid = np.ones_like(known, dtype=bool)
        scores: dict[str, dict[str, float]] = {k: {} for k in (
            "model", "floor_all_background", "floor_all_labelled_class", "floor_colour_rule",
            "floor_reference")}  # fmt: skip
        for name in classes:
            i = CLASSES.index(name)
            truth = (known == KNOWN) & (true_class == i)
            scores["model"][name] = _iou(pred_class == i, truth, valid)
            scores["floor_all_background"][name] = _iou(~valid, truth, valid)
            scores["floor_all_labelled_class"][name] = _iou(valid, truth, valid)
            trained = colour_rule(img, training_colour_counts(z, name))
            scores["floor_colour_rule"][name] = _iou(trained, truth, valid)
            if ref_class is not None:
                scores["floor_reference"][name] = _iou(ref_class == i, truth, valid)
        for entry in scores.values():
            if entry:
                entry["mean"] = float(np.nanmean(list(entry.values())))
        per_zoom[str(z)] = {
            "tiles": len(keys),
            "labelled_share": float((known == KNOWN).mean()),
            **{k: ({"iou": v} if v else None) for k, v in scores.items()},
            "seam_block": metrics.seam_strength(gen, kind="block", mask=mask),
            "seam_inner": metrics.seam_strength(gen, kind="inner", mask=mask),
        }
    entries = list(per_zoom.values())
    overall: dict = {}
    for who in ("model", "floor_all_background", "floor_all_labelled_class",
                "floor_colour_rule", "floor_reference"):  # fmt: skip
        got = [e[who]["iou"] for e in entries if e[who] is not None]
        overall[who] = {"iou": {k: _mean([g[k] for g in got]) for k in got[0]}} if got else None
    for key in ("seam_block", "seam_inner"):
        overall[key] = _mean([e[key] for e in entries])
    return {"per_zoom": per_zoom, "overall": overall}


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    finite = [v for v in vals if math.isfinite(v)]
    return float(np.mean(finite)) if finite else (float("inf") if vals else None)


def _overall(per_zoom: dict[str, dict]) -> dict:
    entries = list(per_zoom.values())
    out: dict = {}
    for who in ("model", "floor_flat_mean", "floor_reference"):
        got = [e[who] for e in entries if e[who] is not None]
        if not got:
            out[who] = None
            continue
        out[who] = {
            "psnr_y": _mean([g["psnr_y"] for g in got]),
            "ssim_y": _mean([g["ssim_y"] for g in got]),
            "iou": {k: _mean([g["iou"][k] for g in got]) for k in got[0]["iou"]},
        }
    for key in ("seam_block", "seam_inner", "seam_block_truth", "seam_inner_truth",
                "cross_zoom_psnr", "cross_zoom_psnr_truth"):  # fmt: skip
        out[key] = _mean([e[key] for e in entries])
    return out


def _labels_view(c: CascadeRun) -> dict[Tile, np.ndarray]:
    """The truth as a mapper reads labels: unknown pixels hatched grey, not painted background."""
    out = {}
    for t, truth in c.truth.items():
        view = truth.copy()
        unknown = c.knowledge[t] == UNKNOWN
        yy, xx = np.mgrid[: unknown.shape[0], : unknown.shape[1]]
        view[unknown] = np.where(((xx + yy) // 6 % 2 == 0)[unknown, None], 200, 170)
        out[t] = view
    return out


def write_mosaics(c: CascadeRun, zooms: range, out: Path) -> list[str]:
    """imagery | generated | truth per zoom, as PNGs (shrunk to keep them small)."""
    names = []
    truth = _labels_view(c)
    for z in zooms:
        keys = [t for t in c.generated if t.z == z and c.mask[t].any()]
        if not keys:
            continue
        panels = [_mosaic(d, keys) for d in (c.imagery, c.generated, truth)]
        gap = np.full((panels[0].shape[0], 8, 3), 255, np.uint8)
        row = np.hstack([panels[0], gap, panels[1], gap, panels[2]])
        img = Image.fromarray(row)
        if panels[0].shape[1] > PANEL_MAX_PX:
            k = PANEL_MAX_PX / panels[0].shape[1]
            img = img.resize((round(img.width * k), round(img.height * k)), Image.Resampling.BOX)
        name = f"mosaic_z{z}.png"
        img.save(out / name, optimize=True)
        names.append(name)
    return names


def _json_safe(v: object) -> object:
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


FLOORS = {
    "floor_flat_mean": "every pixel the truth's mean colour over the valid area",
    "floor_reference": "the cascade reference the model received (its own coarser outputs cut "
    "and upsampled), scored as if it were the answer; none at the root",
}
FLOORS_PARTIAL = {
    "floor_all_background": "no pixel of the labelled classes",
    "floor_all_labelled_class": "every pixel of the class",
    "floor_colour_rule": "a per-pixel colour classifier (8x8x8 RGB bins -> majority class) "
    "fitted on the labelled pixels of the real training sites at the same zoom",
    "floor_reference": FLOORS["floor_reference"],
}


def load_model(spec: EvalSpec) -> Generator:
    """Check the spec against its area and load its model: what bad input makes fail
    (ValueError, FileNotFoundError), before anything is generated or written."""
    root = area_or_site(spec.area).root_zoom
    if spec.zooms.start < root:
        raise ValueError(f"{spec.area} starts at root zoom {root}; cannot evaluate {spec.zooms}")
    return Generator.load(spec.model, steps=spec.steps, strength=spec.strength)


def evaluate(
    spec: EvalSpec, generator: Generator, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Run the cascade, score it, write report.json and the mosaics; returns the report."""
    spec.out.mkdir(parents=True, exist_ok=True)
    target = target_for(spec)
    c = run_cascade(spec, generator, progress, target)
    scores = (score_partial(c, spec.zooms, target.classes) if target.partial
              else score(c, spec.zooms))  # fmt: skip
    report = {
        "model_requested": spec.model,
        "model": generator.model_id,
        "area": spec.area,
        "split": target.split,
        "bbox": list(target.bbox),
        "zooms": [spec.zooms.start, spec.zooms.stop - 1],
        "root_zoom": target.root_zoom,
        "reference_span": spec.reference_span,
        "context_margin": spec.context_margin,
        "steps": generator.steps,
        "strength": generator.strength,
        "blocks_generated": len(c.block_seconds),
        "seconds_per_block_median": statistics.median(c.block_seconds) if c.block_seconds else None,
        "floors": FLOORS_PARTIAL if target.partial else FLOORS,
        **scores,
    }
    report["mosaics"] = write_mosaics(c, spec.zooms, spec.out)
    report = _json_safe(report)  # type: ignore[assignment]
    (spec.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
