"""MFEncoder, SFAdapter, ScaleEncoder and feature injection on the tiny configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model import ScaleInfo, configs
from model.injection import inject_features, injection_points
from model.mfencoder import MFEncoder
from model.scale_encoder import ScaleEncoder
from model.sfadapter import SFAdapter


@pytest.fixture(scope="module")
def parts() -> configs.Components:
    components = configs.build_tiny()
    for module in (components.unet, components.mfencoder, components.sfadapter):
        module.eval()
    return components


def test_tiny_build_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b = configs.build_tiny(), configs.build_tiny()
    assert torch.rand(1) == expected
    for key, value in a.unet.state_dict().items():
        assert torch.equal(value, b.unet.state_dict()[key]), key


@torch.no_grad()
def test_shapes_at_every_stage(parts: configs.Components) -> None:
    x = torch.rand(2, 3, 512, 512) * 2 - 1
    condition = parts.mfencoder(x, x, torch.tensor([True, False]))
    assert condition.shape == (2, 32, 64, 64)
    features = parts.sfadapter(condition)
    assert [tuple(f.shape) for f in features] == [(2, 16, 64, 64), (2, 32, 32, 32), (2, 64, 16, 16)]
    context = parts.scale_encoder([ScaleInfo.with_span(18, 0.0, 4), ScaleInfo(14)])
    assert context.shape == (2, 77, 32)
    # Every feature matches the UNet activation it is added to, down and up.
    seen: list[tuple[str, tuple[int, ...]]] = []
    hooks = []
    for level, (down, up) in enumerate(injection_points(parts.unet)[:3]):
        for where, module in (("down", down), ("up", up)):
            hooks.append(
                module.register_forward_hook(
                    lambda m, a, o, w=where, lv=level: seen.append(
                        (f"{w}{lv}", tuple((o[0] if isinstance(o, tuple) else o).shape))
                    )
                )
            )
    latents = torch.randn(2, 4, 64, 64)
    out = parts.unet(latents, 10, encoder_hidden_states=context).sample
    for hook in hooks:
        hook.remove()
    assert out.shape == latents.shape
    assert dict(seen) == {
        f"{w}{i}": tuple(f.shape) for i, f in enumerate(features) for w in ("down", "up")
    }


def test_sd21_modules_produce_the_sd21_unet_widths() -> None:
    encoder = MFEncoder(**configs.SD21_MFENCODER).eval()
    adapter = SFAdapter(**configs.SD21_SFADAPTER)
    with torch.no_grad():
        features = adapter(encoder(torch.zeros(1, 3, 64, 64)))
    assert [f.shape[1] for f in features] == [320, 640, 1280]
    assert [f.shape[-1] for f in features] == [8, 4, 2]
    assert configs.SD21_UNET["block_out_channels"][:3] == (320, 640, 1280)
    assert configs.SD21_SFADAPTER["channels"] == configs.SD21_UNET["block_out_channels"][:3]


@torch.no_grad()
def test_zero_features_leave_the_unet_output_unchanged(parts: configs.Components) -> None:
    latents = torch.randn(1, 4, 64, 64)
    context = torch.randn(1, 77, 32)
    plain = parts.unet(latents, 500, encoder_hidden_states=context).sample
    zeros = [torch.zeros(1, c, 64 >> i, 64 >> i) for i, c in enumerate((16, 32, 64))]
    with inject_features(parts.unet, zeros):
        injected = parts.unet(latents, 500, encoder_hidden_states=context).sample
    assert torch.equal(plain, injected)
    ones = [z + 1 for z in zeros]
    with inject_features(parts.unet, ones):
        changed = parts.unet(latents, 500, encoder_hidden_states=context).sample
    assert not torch.allclose(plain, changed)
    # Outside the block the hooks add nothing.
    assert torch.equal(plain, parts.unet(latents, 500, encoder_hidden_states=context).sample)


def test_mismatched_features_raise(parts: configs.Components) -> None:
    bad = [torch.zeros(1, 16, 32, 32)]
    with inject_features(parts.unet, bad), pytest.raises(ValueError, match="does not match"):
        parts.unet(torch.randn(1, 4, 64, 64), 1, encoder_hidden_states=torch.randn(1, 77, 32))


@torch.no_grad()
def test_reference_dropout_uses_the_learned_null(parts: configs.Components) -> None:
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    ref = torch.rand(2, 3, 64, 64) * 2 - 1
    dropped = parts.mfencoder(x, None)
    mixed = parts.mfencoder(x, ref, torch.tensor([False, True]))
    with_ref = parts.mfencoder(x, ref)
    assert torch.allclose(mixed[0], dropped[0], atol=1e-6)
    assert torch.allclose(mixed[1], with_ref[1], atol=1e-6)
    assert not torch.allclose(dropped[1], with_ref[1])
    # The null input is a parameter: training can learn what "no reference" means.
    assert parts.mfencoder.no_reference.requires_grad is not None
    assert "no_reference" in dict(parts.mfencoder.named_parameters())


@torch.no_grad()
def test_a_map_head_draws_a_full_size_map_beside_the_encoder(tmp_path: Path) -> None:
    plain = MFEncoder(stem_channels=8, channels=(8, 16), spade_hidden=8, spade_norm="group",
                      out_channels=16).eval()  # fmt: skip
    encoder = MFEncoder.from_config(plain.config).eval()
    encoder.load_state_dict(plain.state_dict())
    encoder.add_map_head((8, 16, 32))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    drawn = encoder.draw_map(x)
    assert drawn.shape == x.shape
    assert not torch.allclose(drawn[0], drawn[1])  # it reads the imagery
    # Its own branch: the encoder's conditions are the same with or without it.
    assert torch.equal(encoder(x, None), plain(x, None))
    # Saved and loaded with its head; an encoder without one cannot draw.
    encoder.save_pretrained(tmp_path)
    loaded = MFEncoder.from_pretrained(tmp_path)
    assert loaded.map_head is not None and torch.equal(loaded.draw_map(x), drawn)
    with pytest.raises(ValueError, match="no map head"):
        plain.draw_map(x)
    with pytest.raises(ValueError, match="not divisible by 4"):
        encoder.draw_map(torch.zeros(1, 3, 66, 66))


@torch.no_grad()
def test_group_norm_variant_and_numeric_scale_encoder() -> None:
    encoder = MFEncoder(stem_channels=8, channels=(8, 16, 32), spade_hidden=8, spade_norm="group")
    assert encoder(torch.zeros(1, 3, 64, 64)).shape == (1, 384, 8, 8)
    numeric = ScaleEncoder(kind="numeric", context_dim=32, num_tokens=4, hidden=16)
    context = numeric([ScaleInfo.with_span(18, 0.0, 4), ScaleInfo.with_span(18, 0.0, 2)])
    assert context.shape == (2, 4, 32)
    assert not torch.allclose(context[0], context[1])
    with pytest.raises(ValueError):
        ScaleEncoder(kind="bert")


def test_text_tower_loads_from_an_open_clip_checkpoint(tmp_path) -> None:  # noqa: ANN001
    source = ScaleEncoder(**configs.TINY_TEXT)
    # An open_clip CLIP checkpoint keeps text weights at top level beside visual.* entries.
    state = {k: v.clone() for k, v in source.text.state_dict().items()}
    state["visual.conv1.weight"] = torch.zeros(1)
    state["logit_scale"] = torch.ones(())
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    target = ScaleEncoder(**configs.TINY_TEXT)
    target.load_open_clip_checkpoint(tmp_path / "open_clip_pytorch_model.bin")
    scales = [ScaleInfo(15)]
    with torch.no_grad():
        assert torch.equal(source(scales), target(scales))
    torch.save({"logit_scale": torch.ones(())}, tmp_path / "vision_only.bin")
    with pytest.raises(ValueError, match="lacks text tower"):
        target.load_open_clip_checkpoint(tmp_path / "vision_only.bin")
