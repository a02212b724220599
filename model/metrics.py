"""Image metrics for generated maps: Y-channel PSNR/SSIM (as the SCGM paper), class IoU by
nearest palette colour, seam strength across tile/block borders, cross-zoom consistency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from skimage.metrics import structural_similarity

Palette = Mapping[str, Sequence[tuple[int, int, int]] | tuple[int, int, int]]


def _rgb(img: object) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return a[..., :3].astype(np.float64)


def y_channel(img: object) -> np.ndarray:
    """BT.601 luma of an RGB image, studio range 16-235, as MATLAB rgb2ycbcr (the papers' Y)."""
    a = _rgb(img)
    return 16.0 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0


def psnr_y(pred: object, truth: object, mask: np.ndarray | None = None) -> float:
    """PSNR (dB, peak 255) of the Y channel; inf for identical images."""
    d = y_channel(pred) - y_channel(truth)
    if mask is not None:
        d = d[mask]
    mse = float(np.mean(d * d)) if d.size else 0.0
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim_y(pred: object, truth: object, mask: np.ndarray | None = None) -> float:
    """SSIM of the Y channel (Gaussian window, sigma 1.5, as Wang et al.); mean over `mask`."""
    _, smap = structural_similarity(
        y_channel(pred), y_channel(truth), data_range=255.0, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False, full=True,
    )  # fmt: skip
    return float(smap[mask].mean() if mask is not None else smap.mean())


def _palette_arrays(palette: Palette) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = list(palette)
    colours, owner = [], []
    for i, name in enumerate(names):
        entry = palette[name]
        many = entry if isinstance(entry[0], Sequence) else [entry]
        for c in many:
            colours.append(c)
            owner.append(i)
    return names, np.asarray(colours, dtype=np.float64), np.asarray(owner)


def class_map(img: object, palette: Palette) -> np.ndarray:
    """(H, W) int: index (in palette order) of the class whose nearest colour each pixel has."""
    _, colours, owner = _palette_arrays(palette)
    a = _rgb(img).astype(np.float32)
    centres = colours[None, None].astype(np.float32)
    out = np.empty(a.shape[:2], dtype=owner.dtype)
    rows = max(1, 2**20 // max(1, a.shape[1]))  # bounded memory on large mosaics
    for r in range(0, a.shape[0], rows):
        d = ((a[r : r + rows, :, None, :] - centres) ** 2).sum(-1)
        out[r : r + rows] = owner[np.argmin(d, axis=-1)]
    return out


def class_iou(
    pred: object, truth: object, palette: Palette, mask: np.ndarray | None = None
) -> dict[str, float]:
    """IoU per class and their `mean` (over classes present in either image; NaN if absent)."""
    names = list(palette)
    p, t = class_map(pred, palette), class_map(truth, palette)
    if mask is not None:
        p, t = p[mask], t[mask]
    out: dict[str, float] = {}
    for i, name in enumerate(names):
        union = np.count_nonzero((p == i) | (t == i))
        inter = np.count_nonzero((p == i) & (t == i))
        out[name] = inter / union if union else float("nan")
    present = [v for v in out.values() if not np.isnan(v)]
    out["mean"] = float(np.mean(present)) if present else float("nan")
    return out


def seam_strength(
    mosaic: object, tile: int = 256, kind: str = "block", mask: np.ndarray | None = None
) -> float:
    """Mean |difference| across tile borders / the same between neighbouring interior pixels.

    kind "block": borders between blocks (multiples of 2*tile); "inner": borders inside a block
    (odd multiples of tile). Rows and columns both count. 1.0 = the border cannot be told from
    any other pixel step; a hard seam is >> 1. NaN when the mosaic has no such border.
    With `mask`, only pixel pairs with data on both sides count (no-data edges are no seams).
    """
    a = _rgb(mosaic).mean(axis=-1)
    valid = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    h, w = a.shape
    step = 2 * tile
    offset = 0 if kind == "block" else tile
    if kind not in ("block", "inner"):
        raise ValueError(f"kind must be 'block' or 'inner', got {kind!r}")

    def borders(n: int) -> list[int]:
        return [b for b in range(offset or step, n, step) if 0 < b < n]

    border_diffs, interior = [], []
    for axis, n in ((1, w), (0, h)):
        for b in borders(n):
            border_diffs.append(_steps(a, valid, b - 1, axis))
            # Reference: the pixel steps just beside the border, on both sides of it.
            for k in (b - 2, b + 1):
                if k >= 0 and k + 1 < n:
                    interior.append(_steps(a, valid, k, axis))
    if not border_diffs or not np.concatenate(border_diffs).size:
        return float("nan")
    num = float(np.mean(np.concatenate(border_diffs)))
    den = float(np.mean(np.concatenate(interior)))
    if den == 0:
        return 1.0 if num == 0 else float("inf")
    return num / den


def _steps(a: np.ndarray, valid: np.ndarray, k: int, axis: int) -> np.ndarray:
    """|a[k+1] - a[k]| along `axis`, where both pixels are valid."""
    d = np.abs(np.take(a, k + 1, axis=axis) - np.take(a, k, axis=axis))
    return d[np.take(valid, k + 1, axis=axis) & np.take(valid, k, axis=axis)]


def cross_zoom_psnr(
    child_tiles: Mapping[tuple[int, int, int], object],
    parent_tiles: Mapping[tuple[int, int, int], object],
) -> float:
    """Y-PSNR between each child tile (z, x, y) downsampled x2 and the matching quadrant of its
    parent (z-1, x>>1, y>>1), pooled over every pair whose parent is present (NaN if none)."""
    sq, n = 0.0, 0
    for (z, x, y), child in child_tiles.items():
        parent = parent_tiles.get((z - 1, x >> 1, y >> 1))
        if parent is None:
            continue
        c = _rgb(child)
        small = c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2, 3).mean(axis=(1, 3))
        p = _rgb(parent)
        hh, hw = p.shape[0] // 2, p.shape[1] // 2
        quad = p[(y & 1) * hh : (y & 1) * hh + hh, (x & 1) * hw : (x & 1) * hw + hw]
        d = y_channel(small) - y_channel(quad)
        sq += float((d * d).sum())
        n += d.size
    if n == 0:
        return float("nan")
    mse = sq / n
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
