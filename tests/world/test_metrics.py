"""model.metrics on constructed images with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import (
    class_iou,
    class_map,
    cross_zoom_psnr,
    psnr_y,
    seam_strength,
    ssim_y,
    y_channel,
)

PALETTE = {"a": [(0, 0, 0)], "b": [(255, 255, 255), (250, 250, 250)]}


def _noise(seed: int = 0, shape=(64, 64, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_identical_images_are_perfect() -> None:
    img = _noise()
    assert psnr_y(img, img) == math.inf
    assert ssim_y(img, img) == pytest.approx(1.0)
    iou = class_iou(img, img, PALETTE)
    assert iou["a"] == iou["b"] == iou["mean"] == 1.0


def test_psnr_of_a_known_error() -> None:
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[..., 1] += 10  # Y changes by 10 * 128.553 / 255 everywhere
    dy = 10 * 128.553 / 255
    assert psnr_y(a, b) == pytest.approx(10 * math.log10(255**2 / dy**2))
    assert y_channel(np.zeros((1, 1, 3)))[0, 0] == pytest.approx(16.0)
    assert y_channel(np.full((1, 1, 3), 255))[0, 0] == pytest.approx(235.0)


def test_one_pixel_shift_scores_lower() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255  # one vertical edge
    shifted = np.roll(img, 1, axis=1)
    shifted[:, 0] = 0
    # Only column 32 differs, by the full Y range 219: MSE = 219^2 / 64.
    assert psnr_y(img, shifted) == pytest.approx(10 * math.log10(255**2 * 64 / 219**2))
    assert 0.5 < ssim_y(img, shifted) < 0.99
    iou = class_iou(shifted, img, PALETTE)
    assert iou["b"] == pytest.approx(31 / 32)  # 31 of 32 white columns overlap
    assert iou["a"] == pytest.approx(32 / 33)


def test_class_map_takes_the_nearest_colour() -> None:
    img = np.array([[[10, 10, 10], [240, 240, 240], [128, 140, 140]]], np.uint8)
    assert class_map(img, PALETTE).tolist() == [[0, 1, 1]]


def test_masks_restrict_the_scores() -> None:
    a, b = _noise(1), _noise(2)
    mask = np.zeros((64, 64), bool)
    mask[:, :32] = True
    b[:, :32] = a[:, :32]
    assert psnr_y(a, b, mask) == math.inf
    assert ssim_y(a, b, mask) > psnr_y(a, b) / 100  # finite and in range
    assert class_iou(a, b, PALETTE, mask)["mean"] == 1.0


def test_hard_seam_is_strong_and_gradient_is_invisible() -> None:
    ramp = np.add.outer(np.arange(1024) * 0.1, np.arange(1024) * 0.2)  # smooth in x and y
    smooth = np.stack([ramp] * 3, axis=-1)
    assert seam_strength(smooth, kind="block") == pytest.approx(1.0)
    assert seam_strength(smooth, kind="inner") == pytest.approx(1.0)
    seam = smooth.copy()
    seam[:, 512:] += 40  # a hard step on the block border at x = 512
    assert seam_strength(seam, kind="block") > 20
    assert seam_strength(seam, kind="inner") == pytest.approx(1.0)  # inner borders untouched


def test_seam_needs_a_border() -> None:
    assert math.isnan(seam_strength(np.zeros((256, 256, 3)), kind="block"))


def test_cross_zoom_psnr() -> None:
    parent = _noise(3, (256, 256, 3))
    children = {}
    for qy in (0, 1):
        for qx in (0, 1):
            quad = parent[qy * 128 : qy * 128 + 128, qx * 128 : qx * 128 + 128]
            children[(5, 2 + qx, 4 + qy)] = np.repeat(np.repeat(quad, 2, 0), 2, 1)
    assert cross_zoom_psnr(children, {(4, 1, 2): parent}) == math.inf
    other = {(4, 1, 2): _noise(4, (256, 256, 3))}
    assert cross_zoom_psnr(children, other) < 15
    assert math.isnan(cross_zoom_psnr(children, {}))
