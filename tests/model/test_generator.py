"""Generator on the tiny configuration: determinism, conditioning, batching, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import BlockRequest, Generator, ScaleInfo, configs
from model.pipeline import anchored_noise, sample_generator, tensor_to_image
from tests.model.helpers import noise_image, pixels

ROOT = Path(__file__).resolve().parents[2]


def test_output_is_one_rgb_512_block_per_request(tiny: Generator, request_z18) -> None:  # noqa: ANN001
    (out,) = tiny.generate([request_z18])
    assert out.size == (512, 512) and out.mode == "RGB"
    assert pixels(out).std() > 1  # not a flat image
    assert tiny.model_id.startswith("tiny-") and len(tiny.model_id) == len("tiny-") + 8
    assert tiny.generate([]) == []


def test_same_seed_same_image_other_seed_other_image(tiny: Generator, request_z18) -> None:  # noqa: ANN001
    a = pixels(tiny.generate([request_z18])[0])
    b = pixels(tiny.generate([request_z18])[0])
    c = pixels(tiny.generate([dataclasses.replace(request_z18, noise_seed=8)])[0])
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1


def test_reference_and_scale_text_change_the_output(tiny: Generator, request_z18) -> None:  # noqa: ANN001
    base = pixels(tiny.generate([request_z18])[0])
    other_ref = dataclasses.replace(request_z18, reference=noise_image(3))
    other_zoom = dataclasses.replace(request_z18, scale=ScaleInfo.with_span(16, 47.0, 4))
    other_lat = dataclasses.replace(request_z18, scale=ScaleInfo.with_span(18, 10.0, 4))
    for changed in (other_ref, other_zoom, other_lat):
        assert not np.array_equal(base, pixels(tiny.generate([changed])[0]))


def test_root_zoom_runs_with_the_reference_dropped(tiny: Generator, imagery: Image.Image) -> None:
    root = BlockRequest(imagery, None, ScaleInfo(zoom=12, lat=47.0), noise_seed=7)
    (out,) = tiny.generate([root])
    assert out.size == (512, 512)


def _batch(imagery: Image.Image, reference: Image.Image) -> list[BlockRequest]:
    return [
        BlockRequest(imagery, reference, ScaleInfo.with_span(18, 47.0, 4), noise_seed=1),
        BlockRequest(noise_image(5), None, ScaleInfo(14, 47.0), noise_seed=2),
        BlockRequest(noise_image(6), reference, ScaleInfo.with_span(15, -20.0, 2), noise_seed=3),
    ]


def test_batch_of_three_equals_three_single_calls(tiny: Generator, imagery, reference) -> None:  # noqa: ANN001
    requests = _batch(imagery, reference)
    batched = tiny.generate(requests)
    singles = [tiny.generate([r])[0] for r in requests]
    for b, s in zip(batched, singles, strict=True):
        assert np.array_equal(pixels(b), pixels(s))


def test_batched_kernels_keep_per_sample_noise(tiny: Generator, imagery, reference) -> None:  # noqa: ANN001
    """The truly batched path (GPU default) with the ancestral sampler, which draws noise at
    every step: identical draws per sample, only kernel rounding differs."""
    requests = _batch(imagery, reference)
    pipe = tiny.pipeline
    scheduler = "ddpm"
    batched = pipe(requests, steps=3, scheduler=scheduler, batch_invariant=False)
    singles = [pipe([r], steps=3, scheduler=scheduler)[0] for r in requests]
    for b, s in zip(batched, singles, strict=True):
        diff = np.abs(pixels(b) - pixels(s))
        assert diff.max() <= 2 and (diff == 0).mean() > 0.99
    # Initial latents are bit-identical per sample, whatever the batch.
    gens = [sample_generator(r.noise_seed) for r in requests]
    all_latents = pipe.prepare_latents(requests, gens, 512, 512)
    for i, r in enumerate(requests):
        one = pipe.prepare_latents([r], [sample_generator(r.noise_seed)], 512, 512)
        assert torch.equal(all_latents[i : i + 1], one)


@pytest.mark.parametrize("scheduler", ["dpm++", "euler", "ddim"])
def test_other_schedulers_run_and_are_deterministic(
    tiny: Generator, request_z18, scheduler
) -> None:  # noqa: ANN001
    a = tiny.pipeline([request_z18], steps=2, scheduler=scheduler)[0]
    b = tiny.pipeline([request_z18], steps=2, scheduler=scheduler)[0]
    assert a.size == (512, 512) and np.array_equal(pixels(a), pixels(b))


def test_checkpoint_round_trip_gives_identical_outputs(
    tiny: Generator, request_z18, tmp_path
) -> None:  # noqa: ANN001
    tiny.save_pretrained(tmp_path / "ckpt")
    meta = json.loads((tmp_path / "ckpt" / "generator.json").read_text())
    assert meta["model_id"] == tiny.model_id
    assert (tmp_path / "ckpt" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = Generator.load(str(tmp_path / "ckpt"))
    assert loaded.model_id == tiny.model_id and loaded.steps == tiny.steps
    a = tiny.generate([request_z18])[0]
    b = loaded.generate([request_z18])[0]
    assert np.array_equal(pixels(a), pixels(b))


def test_model_id_is_the_same_in_a_fresh_process(tiny: Generator) -> None:
    code = "from model import Generator; print(Generator.load('tiny').model_id)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == tiny.model_id


def test_steps_and_dtype_options(request_z18) -> None:  # noqa: ANN001
    two = Generator.load("tiny", steps=2, dtype="bf16")
    assert two.steps == 2 and two.pipeline.dtype == torch.bfloat16
    (out,) = two.generate([request_z18])
    assert out.size == (512, 512)
    with pytest.raises(ValueError, match="dtype"):
        Generator.load("tiny", dtype="fp8")


def test_demo_without_weights_and_unknown_names_raise_clearly(tmp_path) -> None:  # noqa: ANN001
    from model import configs

    if not (configs.DEMO_WEIGHTS / "generator.json").is_file():
        with pytest.raises(FileNotFoundError, match="demo"):
            Generator.load("demo")
    with pytest.raises(ValueError, match="neither a configuration"):
        Generator.load("sd15")
    with pytest.raises(FileNotFoundError, match="generator.json"):
        Generator.load(str(tmp_path))


@pytest.mark.parametrize(
    "change",
    [
        {"imagery": Image.new("RGB", (256, 256))},
        {"reference": Image.new("RGB", (256, 256))},
        {"reference": None},  # span 4 says there is a reference
        {"scale": ScaleInfo(18)},  # no-reference scale with a reference given
    ],
)
def test_malformed_requests_raise(tiny: Generator, request_z18, change: dict) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="request 0"):
        tiny.generate([dataclasses.replace(request_z18, **change)])


def test_anchored_noise_is_fixed_to_the_world_not_the_frame() -> None:
    shape, factor = (4, 40, 40), 4  # a 160 px frame
    a = anchored_noise(7, 16, (1024, 512), shape, factor)
    b = anchored_noise(7, 16, (1024 + 96, 512 - 32), shape, factor)  # overlaps a
    assert a.shape == (1, *shape)
    # b's latent cell (r, c) is a's cell (r - 8, c + 24): the same place, the same draw.
    assert torch.equal(a[..., :32, 24:], b[..., 8:, :16])
    assert not torch.equal(a, anchored_noise(8, 16, (1024, 512), shape, factor))  # seed
    assert not torch.equal(a, anchored_noise(7, 17, (1024, 512), shape, factor))  # zoom
    assert abs(float(a.std()) - 1) < 0.1
    with pytest.raises(ValueError, match="multiple of the latent factor"):
        anchored_noise(7, 16, (1026, 512), shape, factor)


def test_a_frame_with_margin_gives_its_512_centre(tiny: Generator) -> None:
    scale = ScaleInfo.with_span(18, lat=47.0, span=4)
    frame = BlockRequest(noise_image(1, 640), noise_image(2, 640), scale, noise_seed=7, margin=64,
                         origin=(2048 - 64, 4096 - 64))  # fmt: skip
    (out,) = tiny.generate([frame])
    (whole,) = tiny.pipeline([frame], steps=tiny.steps, scheduler=tiny.scheduler)
    assert out.size == (512, 512) and whole.size == (640, 640)
    assert np.array_equal(pixels(out), pixels(whole)[64:576, 64:576])
    # The context changes the block: the same centre framed by other imagery draws otherwise.
    other = np.asarray(noise_image(3, 640)).copy()
    other[64:576, 64:576] = np.asarray(frame.imagery)[64:576, 64:576]
    (reframed,) = tiny.generate([dataclasses.replace(frame, imagery=Image.fromarray(other))])
    assert not np.array_equal(pixels(out), pixels(reframed))


def test_frame_size_and_margin_are_checked(tiny: Generator, request_z18) -> None:  # noqa: ANN001
    scale = request_z18.scale
    with pytest.raises(ValueError, match=r"imagery is \(512, 512\), needs \(576, 576\)"):
        tiny.generate([dataclasses.replace(request_z18, margin=32)])
    framed = BlockRequest(noise_image(1, 576), noise_image(2, 576), scale, noise_seed=7, margin=32)
    with pytest.raises(ValueError, match="one margin"):
        tiny.generate([framed, request_z18])
    with pytest.raises(ValueError, match="one margin"):
        tiny.generate([dataclasses.replace(request_z18, margin=-1)])


@pytest.fixture(scope="module")
def headed() -> Generator:
    """The demo architecture (lossless codec: a start map's latents decode to it exactly),
    random weights, with a map head."""
    components = configs.build_demo(seed=3)
    components.mfencoder.add_map_head((8, 16))
    return Generator.from_components(components, steps=50, scheduler="ddim")


def root_of(request: BlockRequest) -> BlockRequest:
    scale = ScaleInfo.with_span(request.scale.zoom, request.scale.lat, 0)
    return dataclasses.replace(request, reference=None, scale=scale)


def mean_abs(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_a_low_strength_keeps_the_heads_sketch_of_the_blocks_imagery(
    headed: Generator, request_z18: BlockRequest
) -> None:
    """strength < 1 starts from the map head's noised sketch of the block's imagery, with or
    without a reference, and runs only the last steps: with 1 of 50 (t = 19) the map is nearly
    the sketch; at strength 1 the random model's map owes the sketch nothing."""
    pipe, seen = headed.pipeline, []
    sketch = tensor_to_image(pipe.start_maps([request_z18])[0])
    assert mean_abs(sketch, request_z18.reference) > 20  # tell the two starts apart
    hook = pipe.unet.register_forward_hook(lambda module, args, out: seen.append(args[1]))
    try:
        kept = pipe([request_z18], steps=50, scheduler="ddim", strength=0.02)[0]
        assert [int(t) for t in seen] == [19]
        free = pipe([request_z18], steps=2, scheduler="ddim")[0]
    finally:
        hook.remove()
    assert len(seen) == 3
    assert mean_abs(kept, sketch) < 8 < mean_abs(free, sketch)
    root = root_of(request_z18)
    assert mean_abs(pipe([root], steps=50, scheduler="ddim", strength=0.02)[0], sketch) < 8
    for other in ("ddpm", "dpm++", "euler"):  # their own step counting and noise scales
        near = pipe([request_z18], steps=50, scheduler=other, strength=0.02)[0]
        assert mean_abs(near, sketch) < 8, other
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        pipe([root], steps=2, strength=0.0)


def test_strength_1_ignores_the_map_head_and_below_1_needs_one(
    headed: Generator, request_z18: BlockRequest
) -> None:
    """A layer at strength 1 draws the same maps whether its model has a map head or not (the
    shipped demo layer's maps did not change when the head was added)."""
    components = configs.build_demo(seed=3)
    plain = Generator.from_components(components, steps=2, scheduler="ddim")
    with_head = Generator.from_components(
        dataclasses.replace(components, mfencoder=headed.pipeline.mfencoder),
        steps=2,
        scheduler="ddim",
    )
    for request in (request_z18, root_of(request_z18)):
        (a,), (b,) = plain.generate([request]), with_head.generate([request])
        assert np.array_equal(pixels(a), pixels(b))
    with pytest.raises(ValueError, match="needs a model with a map head"):
        Generator.from_components(components, strength=0.5)
    with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
        Generator.from_components(components, strength=1.5)
