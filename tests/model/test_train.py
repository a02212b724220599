"""Training: the loss falls, a resumed run continues exactly, references are degraded sanely."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from model import Generator
from model.codec import encode_latents
from model.train import Trainer, TrainOptions
from model.train_data import FOLDERS, KNOWN, Augment, TileDataset, degrade_reference

TILE = 64
PALETTE = np.array([[242, 239, 233], [252, 210, 160], [214, 194, 178], [170, 211, 223]])


def write_dataset(root: Path, tiles: int = 4) -> Path:
    """A CSCMG-layout set of flat-colour maps; imagery is a darker recolouring of the map."""
    rng = np.random.default_rng(0)
    names = []
    for i in range(tiles):
        name = f"16_{100 + i}_{200 + i}"
        names.append(name)
        classes = np.kron(rng.integers(0, len(PALETTE), (8, 8)), np.ones((8, 8), dtype=int))
        map_rgb = PALETTE[classes].astype(np.uint8)
        imagery = (map_rgb * 0.5 + rng.normal(0, 5, map_rgb.shape)).clip(0, 255)
        images = {"map": map_rgb, "imagery": imagery.astype(np.uint8), 2: map_rgb, 4: map_rgb}
        for key, folder in FOLDERS.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[key], "RGB").save(root / folder / f"{name}.png")
    with (root / "train.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tilename"])
        writer.writerows([n] for n in names)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("cscmg"))


def options(data: Path, out: Path, **overrides: object) -> TrainOptions:
    base = TrainOptions(
        config="tiny",
        data=(str(data),),
        out=str(out),
        steps=2,
        batch_size=2,
        vae_batch_size=2,
        crop=TILE,
        vae_crop=TILE,
        lr=1e-3,
        warmup=1,
        checkpoint_every=100,
    )
    return replace(base, **overrides)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(
    data: Path, tmp_path: Path, prediction_type: str
) -> None:
    trainer = Trainer(options(data, tmp_path, prediction_type=prediction_type))
    batch = trainer.data.batch(2, TILE, trainer.rng, Augment())
    start = trainer.rng.get_state()

    def loss() -> torch.Tensor:
        trainer.rng.set_state(start)  # same noise and timesteps every time
        return trainer.diffusion_loss(batch)

    with torch.no_grad():
        before = float(loss())
    for _ in range(15):
        trainer.optimizer.zero_grad()
        loss().backward()
        trainer.optimizer.step()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.7 * before


def losses_of(trainer: Trainer) -> list[float]:
    seen: list[float] = []
    trainer.run(lambda result: seen.append(result.loss))
    return seen


def test_resume_continues_with_identical_state(data: Path, tmp_path: Path) -> None:
    # Two autoencoder steps, then two diffusion steps: the resume point is the phase change.
    straight = options(data, tmp_path / "straight", vae_steps=2, steps=2)
    full = losses_of(Trainer(straight))

    interrupted = options(data, tmp_path / "split", vae_steps=2, steps=2, checkpoint_every=2)
    first = Trainer(replace(interrupted, steps=0))
    head = losses_of(first)
    assert len(head) == 2 and (tmp_path / "split" / "checkpoint" / "trainer.pt").is_file()
    resumed = Trainer(interrupted, resume=True)
    assert resumed.step == 2
    tail = losses_of(resumed)

    assert head + tail == pytest.approx(full, rel=1e-6, abs=1e-7)
    rows = list(csv.DictReader((tmp_path / "split" / "losses.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert (tmp_path / "split" / "export" / "generator.json").is_file()


def test_prediction_type_reaches_the_exported_generator(data: Path, tmp_path: Path) -> None:
    Trainer(options(data, tmp_path, prediction_type="v_prediction", steps=1)).run()
    exported = Generator.load(str(tmp_path / "export"))
    assert exported.pipeline.prediction_type == "v_prediction"
    resumed = Trainer(options(data, tmp_path, steps=2), resume=True)
    assert resumed.components.prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="unknown prediction type"):
        Trainer(options(data, tmp_path / "bad", prediction_type="x0"))


def test_a_fixed_codec_refuses_autoencoder_steps(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no autoencoder to train"):
        Trainer(options(data, tmp_path, config="demo", vae_steps=1))


def test_degraded_reference_changes_pixels_but_keeps_shape_and_range(data: Path) -> None:
    dataset = TileDataset(data)
    reference = dataset.images[2][0].float() / 127.5 - 1.0
    rng = torch.Generator().manual_seed(3)
    degraded = degrade_reference(reference, rng, Augment())
    assert degraded.shape == reference.shape
    assert degraded.min() >= -1.0 and degraded.max() <= 1.0
    assert (degraded - reference).abs().mean() > 0.01
    # Still the same map underneath: degradation is a perturbation, not a new image.
    assert (degraded - reference).abs().mean() < 0.3


def test_reference_dropout_and_joint_augmentation(data: Path) -> None:
    dataset = TileDataset(data)
    rng = torch.Generator().manual_seed(0)
    batch = dataset.batch(64, 32, rng, Augment(reference_dropout=0.5, degrade=0.0))
    dropped = ~batch.has_reference
    assert 10 < int(dropped.sum()) < 54
    assert all(s.span == 0 for s, d in zip(batch.scales, dropped.tolist(), strict=True) if d)
    assert torch.all(batch.reference[dropped] == 0)
    # imagery is the map darkened, and the same flips/rotations hit both.
    kept = batch.has_reference
    assert torch.allclose(batch.reference[kept], batch.target[kept])
    darker = (batch.target + 1) * 0.5 - 1
    assert (batch.imagery - darker).abs().mean() < 0.06


def test_zoom_out_samples_are_halved_crops_one_zoom_up_without_reference(data: Path) -> None:
    dataset = TileDataset(data)
    rng = torch.Generator().manual_seed(0)
    plain = Augment(reference_dropout=0.0, degrade=0.0, imagery_jitter=0.0)
    batch = dataset.batch(16, 32, rng, replace(plain, zoom_out=1.0))
    assert {s.zoom for s in batch.scales} == {15} and not batch.has_reference.any()
    assert torch.all(batch.reference == 0) and batch.reference.shape == batch.imagery.shape
    assert batch.imagery.shape[-1] == 32
    # the map's 8 px class squares are 4 px now, still aligned with the averaged imagery.
    darker = (batch.target + 1) * 0.5 - 1
    assert (batch.imagery - darker).abs().mean() < 0.06
    assert torch.equal(
        batch.target[..., ::4, ::4].repeat_interleave(4, -1).repeat_interleave(4, -2), batch.target
    )
    mixed = dataset.batch(16, 16, rng, replace(plain, zoom_out=0.5))  # stacks whatever is drawn
    assert {s.zoom for s in mixed.scales} == {15, 16}
    # a crop twice the size must fit in the tile, else the sample stays at its zoom.
    whole = dataset.batch(4, 64, rng, replace(plain, zoom_out=1.0))
    assert {s.zoom for s in whole.scales} == {16} and whole.has_reference.all()


def test_cooldown_anneals_the_learning_rate_to_zero(data: Path, tmp_path: Path) -> None:
    trainer = Trainer(options(data, tmp_path, steps=4, cooldown=2, checkpoint_every=2))
    rates = []
    for _ in range(2):
        trainer.train_step()
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    trainer.save()
    resumed = Trainer(options(data, tmp_path, steps=4, cooldown=2), resume=True)
    for _ in range(2):
        resumed.train_step()
        rates.append(resumed.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3, 0.5e-3])  # 2 left: full; 1 left: half


def test_partial_labels_learn_only_where_known(data: Path, tmp_path: Path) -> None:
    trainer = Trainer(options(data, tmp_path, config="demo", prediction_type="v_prediction"))
    batch = trainer.data.batch(2, TILE, trainer.rng, Augment(imagery_jitter=0.0))
    knowledge = torch.full((2, 1, TILE, TILE), KNOWN, dtype=torch.uint8)
    knowledge[..., TILE // 2 :] = 0  # the right half is unknown
    batch = replace(batch, knowledge=knowledge, excluded_colours=[torch.empty(0, 3)] * 2)
    # The UNet's answer as a leaf tensor, to see which of its cells the loss pulls on.
    unet = trainer.components.unet
    latent = TILE // 4  # the demo's patch codec folds 4x4 pixels into one latent cell
    pred = torch.randn(2, unet.config.out_channels, latent, latent, requires_grad=True)
    unet.forward = lambda *args, **kwargs: SimpleNamespace(sample=pred)  # type: ignore[method-assign]
    trainer.diffusion_loss(batch).backward()
    assert pred.grad is not None
    assert (pred.grad[..., latent // 2 :] == 0).all()  # unknown pixels teach nothing
    assert (pred.grad[..., : latent // 2] != 0).float().mean() > 0.99
    # Nothing known at all: nothing to learn.
    unknown = replace(batch, knowledge=torch.zeros_like(knowledge))
    assert float(trainer.diffusion_loss(unknown)) == 0.0


def test_not_labelled_pixels_are_pushed_away_from_the_labelled_colours(
    data: Path, tmp_path: Path
) -> None:
    trainer = Trainer(options(data, tmp_path, config="demo"))
    vae = trainer.components.vae
    building = torch.tensor([214, 194, 178]) / 127.5 - 1.0
    where = torch.zeros(1, 1, TILE, TILE, dtype=torch.bool)
    where[..., :8, :8] = True

    def penalty(colour: torch.Tensor) -> float:
        image = colour.view(1, 3, 1, 1).expand(1, 3, TILE, TILE)
        return float(trainer.exclusion_loss(encode_latents(vae, image), where, [building[None]]))

    assert penalty(building) == pytest.approx(trainer.options.exclusion_margin**2, rel=1e-2)
    assert penalty(torch.tensor([1.0, 1.0, 1.0])) == 0.0  # white road: allowed there
    assert penalty(building + 0.05) > 0.0  # near the building colour still costs


def test_the_map_head_trains_alone_and_resumes(data: Path, tmp_path: Path) -> None:
    """--map-head-only adds a head to the warm-started encoder and trains it by its own loss:
    the rest of the model (the EMA weights that ship) stays bit-identical, the head learns,
    and a resumed run continues from the saved head."""
    head_only = options(data, tmp_path / "head", config="demo", imagery_map_weight=1.0,
                        map_head_only=True, steps=4, lr=1e-3)  # fmt: skip
    trainer = Trainer(head_only)
    encoder = trainer.components.mfencoder
    assert encoder.map_head is not None
    before = {k: t.clone() for k, t in trainer.ema_modules()["unet"].state_dict().items()}
    head_before = {k: t.clone() for k, t in encoder.map_head.state_dict().items()}
    batch = trainer.data.batch(4, TILE, torch.Generator().manual_seed(1), Augment())
    loss_before = trainer.imagery_map_loss(batch).item()
    trainer.run()
    assert trainer.imagery_map_loss(batch).item() < loss_before
    exported = Generator.load(str(tmp_path / "head" / "export"))
    for key, tensor in exported.pipeline.unet.state_dict().items():
        assert torch.equal(tensor, before[key]), key
    head = exported.pipeline.mfencoder.map_head
    assert head is not None
    assert any(not torch.equal(t, head_before[k]) for k, t in head.state_dict().items())
    resumed = Trainer(replace(head_only, steps=5), resume=True)
    assert resumed.components.mfencoder.map_head is not None
    assert resumed.step == 4
    for key, tensor in resumed.components.mfencoder.map_head.state_dict().items():
        assert torch.equal(tensor, encoder.map_head.state_dict()[key]), key
    with pytest.raises(ValueError, match="imagery_map_weight > 0"):
        Trainer(options(data, tmp_path / "bad", config="demo", map_head_only=True, steps=1))
