"""Deterministic hash and value noise over global coordinates, so textures continue across tile
borders and never depend on which tile asked for them."""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def hash_u64(*keys: np.ndarray | int) -> np.ndarray:
    """splitmix64-style hash of integer arrays (broadcast together)."""
    h: np.ndarray = np.asarray(np.uint64(0x2545F4914F6CDD1D))
    with np.errstate(over="ignore"):
        for k in keys:
            k = np.asarray(k).astype(np.int64).astype(np.uint64)
            h = (h ^ k) * _M1
            h = (h ^ (h >> np.uint64(30))) * _M2
            h = (h ^ (h >> np.uint64(27))) * _M3
            h = h ^ (h >> np.uint64(31))
    return h


def hash_unit(*keys: np.ndarray | int) -> np.ndarray:
    """Hash to float in [0, 1)."""
    return (hash_u64(*keys) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def value_noise(u: np.ndarray, v: np.ndarray, seed: int) -> np.ndarray:
    """Smooth value noise in [-1, 1] at lattice coordinates u (columns) and v (rows).

    u is a 1-D array of x positions and v of y positions (separable lattice): the result is
    (len(v), len(u)). Hashes are computed once per lattice point, then gathered per pixel.
    """
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = (u - iu).astype(np.float32), (v - iv).astype(np.float32)
    fu = fu * fu * (3 - 2 * fu)
    fv = fv * fv * (3 - 2 * fv)
    i0, j0 = int(iu.min()), int(iv.min())
    li = np.arange(i0, int(iu.max()) + 2)
    lj = np.arange(j0, int(iv.max()) + 2)
    lattice = hash_unit(seed, li[None, :], lj[:, None]).astype(np.float32)
    cu, cv = iu - i0, iv - j0
    c00 = lattice[np.ix_(cv, cu)]
    c10 = lattice[np.ix_(cv, cu + 1)]
    c01 = lattice[np.ix_(cv + 1, cu)]
    c11 = lattice[np.ix_(cv + 1, cu + 1)]
    fu, fv = fu[None, :], fv[:, None]
    top = c00 + (c10 - c00) * fu
    bottom = c01 + (c11 - c01) * fu
    return (top + (bottom - top) * fv) * 2 - 1


def fbm(
    gx: np.ndarray, gy: np.ndarray, px_per_m: float, wavelengths_m: list[float], seed: int
) -> np.ndarray:
    """Sum of value-noise octaves with the given wavelengths (ground metres).

    gx, gy are global pixel centres; octaves shorter than ~2 pixels are skipped because they
    would only alias — so a texture fades out as you zoom out, like real imagery.
    """
    out = np.zeros((len(gy), len(gx)), dtype=np.float32)
    total = 0.0
    for i, wl in enumerate(wavelengths_m):
        wl_px = wl * px_per_m
        amp = wl**0.5
        total += amp
        if wl_px < 2.0:
            continue
        out += amp * value_noise(gx / wl_px, gy / wl_px, seed * 131 + i)
    return out / max(total, 1e-9)


def pixel_grain(z: int, gx: np.ndarray, gy: np.ndarray, seed: int) -> np.ndarray:
    """Per-pixel sensor grain in [-1, 1], a function of the global (zoom, pixel) only."""
    ix = np.floor(gx).astype(np.int64)[None, :]
    iy = np.floor(gy).astype(np.int64)[:, None]
    return (hash_unit(seed, z, ix, iy) * 2 - 1).astype(np.float32)
