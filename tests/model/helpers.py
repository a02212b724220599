"""Synthetic images for the model tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def noise_image(seed: int, size: int = 512) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)
