"""Training checkpoints: modules as a generator folder plus the trainer state, written atomically.

    OUT/checkpoint/generator/   raw weights (Generator.load-able: generator.json + one
                                diffusers folder of config.json + safetensors per module)
    OUT/checkpoint/trainer.pt   step, optimizer states, EMA weights, every RNG state, options
    OUT/export/                 the EMA weights as a generator folder: what gets shipped

A session can end at any moment, so a checkpoint is written to a temporary folder and renamed
into place; a half-written checkpoint is never the one `--resume` finds.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from model.configs import Components
from model.generator import write_checkpoint

CHECKPOINT = "checkpoint"
EXPORT = "export"


def _replace(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(
    out: Path,
    components: Components,
    modules: dict[str, torch.nn.Module],
    ema_modules: dict[str, torch.nn.Module] | None,
    state: dict[str, Any],
) -> None:
    """`modules` (being trained) to OUT/checkpoint, `ema_modules` (or `modules`) to OUT/export,
    with the sampling defaults of `components`."""
    c = components

    def write(folder: Path, weights: dict[str, torch.nn.Module]) -> None:
        write_checkpoint(folder, weights, name=c.name, steps=c.steps, scheduler=c.scheduler,
                         prediction_type=c.prediction_type)  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp / "generator", modules)
    torch.save(state, tmp / "trainer.pt")
    _replace(tmp, out / CHECKPOINT)
    export_tmp = out / (EXPORT + ".tmp")
    if export_tmp.exists():
        shutil.rmtree(export_tmp)
    write(export_tmp, ema_modules or modules)
    _replace(export_tmp, out / EXPORT)


def load_trainer_state(out: Path) -> dict[str, Any]:
    path = out / CHECKPOINT / "trainer.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume in {out} ({path} is missing)")
    # Our own file: optimizer states and RNG byte tensors, nothing executable.
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state(data_rng: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"data": data_rng.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], data_rng: torch.Generator) -> None:
    data_rng.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
