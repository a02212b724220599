"""The trained demo model ships in model/weights/demo and draws RGB 512x512 blocks."""

from __future__ import annotations

import numpy as np
import pytest

from model import BlockRequest, Generator, ScaleInfo, configs
from tests.model.helpers import noise_image


@pytest.mark.skipif(
    not (configs.DEMO_WEIGHTS / "generator.json").is_file(), reason="demo weights not shipped"
)
def test_shipped_demo_loads_and_generates_rgb_blocks() -> None:
    generator = Generator.load("demo", steps=2)
    assert generator.name == "demo" and generator.scheduler == "ddim"
    scale = ScaleInfo.with_span(17, lat=60.17, span=4)
    root = ScaleInfo.with_span(14, lat=60.17, span=0)
    blocks = generator.generate(
        [
            BlockRequest(noise_image(1), noise_image(2), scale, noise_seed=3),
            BlockRequest(noise_image(4), None, root, noise_seed=5),
        ]
    )
    for block in blocks:
        assert block.mode == "RGB" and block.size == (512, 512)
        assert np.asarray(block).std() > 0  # a picture, not a constant


@pytest.mark.skipif(
    not (configs.DEMO_WEIGHTS / "generator.json").is_file(), reason="demo weights not shipped"
)
def test_the_banepa_layers_sampling_runs_on_the_shipped_map_head() -> None:
    """The banepa layer's strength < 1 needs the map head in the shipped weights: its
    blocks start from the head's sketch of their imagery."""
    from app.settings import banepa_layer

    layer = banepa_layer()
    assert layer.model == "demo" and layer.strength < 1
    generator = Generator.load(layer.model, steps=layer.steps, strength=layer.strength)
    root = BlockRequest(noise_image(4), None, ScaleInfo.with_span(17, lat=27.6, span=0), 5)
    (block,) = generator.generate([root])
    sketch = generator.pipeline.start_maps([root])[0]
    assert block.size == (512, 512) and sketch.shape == (3, 512, 512)
    assert np.asarray(block).std() > 0
