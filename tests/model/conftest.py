"""Fixtures for the model tests: the deterministic tiny generator and synthetic block images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from model import BlockRequest, Generator, ScaleInfo


@pytest.fixture(scope="session")
def tiny() -> Generator:
    return Generator.load("tiny")


def noise_image(seed: int, size: int = 512) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


@pytest.fixture
def imagery() -> Image.Image:
    return noise_image(1)


@pytest.fixture
def reference() -> Image.Image:
    return noise_image(2)


@pytest.fixture
def request_z18(imagery: Image.Image, reference: Image.Image) -> BlockRequest:
    return BlockRequest(imagery, reference, ScaleInfo.cascade(18, lat=47.0, span=4), seed=7)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)
