"""Fixtures for the model tests: the deterministic tiny generator and synthetic block images."""

from __future__ import annotations

import pytest
from PIL import Image

from model import BlockRequest, Generator, ScaleInfo
from tests.model.helpers import noise_image


@pytest.fixture(scope="session")
def tiny() -> Generator:
    return Generator.load("tiny")


@pytest.fixture
def imagery() -> Image.Image:
    return noise_image(1)


@pytest.fixture
def reference() -> Image.Image:
    return noise_image(2)


@pytest.fixture
def request_z18(imagery: Image.Image, reference: Image.Image) -> BlockRequest:
    return BlockRequest(imagery, reference, ScaleInfo.with_span(18, lat=47.0, span=4), noise_seed=7)
