"""`mapcascade train`: train a generator config on a CSCMG-layout data set, resumable."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

# The trainable configurations of model.configs.REGISTRY, named here so that `--help` needs no
# torch; tests/model/test_train_cli.py holds the two equal.
TRAIN_CONFIGS = ("demo", "tiny", "sd21")


@click.command(help="Train a model config on a CSCMG-layout data set (see docs/training.md).")
@click.option("--config", type=click.Choice(TRAIN_CONFIGS), default="demo")
@click.option(
    "--data",
    required=True,
    multiple=True,
    help="Data set folder (rs_256/, map_256/, ref_scale_*_256/, train.csv); repeatable; "
    "DIR*W samples its tiles W times as often.",
)
@click.option(
    "--init",
    default=None,
    help="Warm start from a generator folder (or 'demo', the shipped weights), new optimizer.",
)
@click.option("--split", default="train", show_default=True, help="Tile list: SPLIT.csv.")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option(
    "--vae-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Autoencoder steps before the diffusion steps (configs with a learned, untrained VAE).",
)
@click.option(
    "--prediction-type",
    type=click.Choice(["epsilon", "v_prediction"]),
    default=None,
    help="What the UNet learns to predict (default: the config's; demo: v_prediction).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--crop", type=click.IntRange(min=32), default=128, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learning rate (default: the config's; sd21: 5e-5, others 3e-4).",
)
@click.option(
    "--cooldown",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Decay the learning rate linearly to 0 over the last N diffusion steps.",
)
@click.option(
    "--imagery-map-weight",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Weight of the loss of the MFEncoder's map head, a map drawn from the imagery alone "
    "(added to an encoder without one; blocks start from it when sampling with strength < 1). "
    "0: off.",
)
@click.option(
    "--map-head-only",
    is_flag=True,
    help="Train the map head alone (needs --imagery-map-weight > 0): no UNet pass, fast; the "
    "rest of the model is kept as it is.",
)
@click.option(
    "--reference-dropout",
    type=click.FloatRange(0, 1),
    default=0.15,
    show_default=True,
    help="Share of samples trained without their reference, as the root zoom is generated.",
)
@click.option(
    "--zoom-out",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of samples taken one zoom shallower (a crop twice the size, halved) and without "
    "their reference: teaches the root zoom from deeper tiles.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint exactly.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
def train(
    config: str,
    data: tuple[str, ...],
    init: str | None,
    split: str,
    steps: int,
    vae_steps: int,
    prediction_type: str | None,
    batch_size: int,
    crop: int,
    lr: float | None,
    cooldown: int,
    imagery_map_weight: float,
    map_head_only: bool,
    reference_dropout: float,
    zoom_out: float,
    out: Path | None,
    resume: bool,
    checkpoint_every: int,
    seed: int,
    device: str,
    threads: int,
) -> None:
    if cooldown > steps:
        raise click.BadParameter(
            f"{cooldown} is more than the {steps} diffusion steps", param_hint="--cooldown"
        )
    from model.train_data import parse_data_arg  # the one reader of DIR*W (imports torch)

    for entry in data:
        try:
            folder, _ = parse_data_arg(entry)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--data") from None
        if not folder.is_dir():
            raise click.BadParameter(
                f"{folder} does not exist or is not a folder", param_hint="--data"
            )
    if map_head_only and imagery_map_weight <= 0:
        raise click.BadParameter(
            "training the map head alone needs --imagery-map-weight > 0",
            param_hint="--map-head-only",
        )
    if init is not None and resume:
        raise click.BadParameter("--init starts a run; --resume continues one", param_hint="--init")
    if init is not None and init != "demo" and not (Path(init) / "generator.json").is_file():
        raise click.BadParameter(f"{init} is not a generator folder", param_hint="--init")
    if crop % 32:
        raise click.BadParameter(f"{crop} is not a multiple of 32", param_hint="--crop")
    out = out or Path("runs") / config
    if resume and not (out / "checkpoint" / "trainer.pt").is_file():
        raise click.BadParameter(f"no checkpoint in {out} to resume", param_hint="--resume")
    if not resume and (out / "checkpoint").exists():
        raise click.BadParameter(
            f"{out} already holds a checkpoint: pass --resume or another --out",
            param_hint="--out",
        )

    import torch  # late: `mapcascade --help` must not import torch
    from tqdm import tqdm

    from model.configs import REGISTRY
    from model.train import Trainer, TrainOptions
    from model.train_data import Augment

    if device == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options = TrainOptions(
        config=config,
        data=data,
        init=init,
        out=str(out),
        split=split or None,
        steps=steps,
        vae_steps=vae_steps,
        prediction_type=prediction_type,
        batch_size=batch_size,
        vae_batch_size=batch_size,
        crop=crop,
        vae_crop=crop,
        lr=REGISTRY[config].learning_rate if lr is None else lr,
        cooldown=cooldown,
        imagery_map_weight=imagery_map_weight,
        map_head_only=map_head_only,
        augment=Augment(reference_dropout=reference_dropout, zoom_out=zoom_out),
        checkpoint_every=checkpoint_every,
        seed=seed,
        device=device,
    )
    try:
        trainer = Trainer(options, resume=resume)
    except (FileNotFoundError, ValueError) as e:
        raise click.UsageError(str(e)) from e
    bar = tqdm(total=trainer.total_steps, initial=trainer.step, unit="step", dynamic_ncols=True)
    started, samples = time.monotonic(), 0

    def on_step(result):  # noqa: ANN001, ANN202 - local callback
        nonlocal samples
        samples += result.samples
        rate = samples / max(1e-9, time.monotonic() - started)
        bar.set_postfix(phase=result.phase, loss=f"{result.loss:.4f}", samples_s=f"{rate:.1f}")
        bar.update(1)

    trainer.run(on_step)
    bar.close()
    click.echo(f"done: {trainer.step} steps; weights to ship in {out / 'export'}")
