"""The demo's patch codec: lossless, shaped as the UNet expects, saved and loaded with its class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import BlockRequest, Generator, ScaleInfo, configs
from model.codec import PatchCodec, decode_latents, encode_latents, latent_factor
from model.pipeline import image_to_tensor, tensor_to_image
from tests.model.helpers import noise_image, pixels


def test_round_trip_reproduces_every_pixel() -> None:
    codec = PatchCodec(**configs.DEMO_CODEC)
    image = noise_image(3)
    latents = encode_latents(codec, image_to_tensor(image)[None])
    assert latents.shape == (1, 48, 128, 128) and latent_factor(codec) == 4
    back = tensor_to_image(decode_latents(codec, latents)[0])
    assert np.array_equal(pixels(back), pixels(image))


def test_latents_are_standardised_with_the_configured_statistics() -> None:
    codec = PatchCodec(factor=2, mean=(0.5, 0.0, -0.5), std=(0.25, 1.0, 2.0))
    flat = torch.tensor([0.75, 0.0, 0.5]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    latents = encode_latents(codec, flat)
    assert latents.shape == (1, 12, 2, 2)
    # Channel c * factor^2 + k holds colour c of patch position k.
    assert torch.allclose(latents[0, :4], torch.full((4, 2, 2), 1.0))
    assert torch.allclose(latents[0, 4:8], torch.zeros(4, 2, 2))
    assert torch.allclose(latents[0, 8:], torch.full((4, 2, 2), 0.5))


@pytest.mark.parametrize("kwargs", [{"factor": 0}, {"std": (1.0, 0.0, 1.0)}, {"mean": (0.0, 0.0)}])
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PatchCodec(**kwargs)


def test_a_patch_codec_generator_round_trips_through_a_checkpoint(tmp_path) -> None:  # noqa: ANN001
    generator = Generator.from_components(configs.build_demo(seed=1), steps=1)
    generator.save_pretrained(tmp_path / "ckpt")
    loaded = Generator.load(str(tmp_path / "ckpt"))
    assert isinstance(loaded.pipeline.vae, PatchCodec)
    assert loaded.model_id == generator.model_id
    assert loaded.pipeline.prediction_type == "v_prediction"
    request = BlockRequest(
        noise_image(1), None, ScaleInfo.with_span(14, lat=60.2, span=0), noise_seed=2
    )
    a, b = generator.generate([request])[0], loaded.generate([request])[0]
    # Multi-threaded CPU convolutions may round a few pixels one level apart between two
    # module instances; anything more would be a different model.
    diff = np.abs(pixels(a) - pixels(b))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.01
