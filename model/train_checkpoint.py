"""Training checkpoints: modules as a generator folder plus the trainer state, written atomically.

    OUT/checkpoint/generator/   raw weights (Generator.load-able: generator.json + one
                                diffusers folder of config.json + safetensors per module)
    OUT/checkpoint/trainer.pt   step, optimizer states, EMA weights, every RNG state, options
    OUT/export/                 the EMA weights as a generator folder: what gets shipped

A session can end at any moment, so a checkpoint is written to a temporary folder and renamed
into place; a half-written checkpoint is never the one `--resume` finds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from model.generator import CHECKPOINT_FORMAT, drop_source_path, model_id_of

CHECKPOINT = "checkpoint"
EXPORT = "export"


def write_generator(
    directory: Path, name: str, modules: dict[str, torch.nn.Module], steps: int, scheduler: str
) -> str:
    """The Generator.save_pretrained layout, written from modules still being trained."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, module in modules.items():
        module.save_pretrained(directory / key, safe_serialization=True)
        drop_source_path(directory / key / "config.json")
    model_id = model_id_of(name, modules)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "name": name,
        "model_id": model_id,
        "steps": steps,
        "scheduler": scheduler,
    }
    (directory / "generator.json").write_text(json.dumps(meta, indent=2) + "\n")
    return model_id


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
    name: str,
    modules: dict[str, torch.nn.Module],
    ema_modules: dict[str, torch.nn.Module] | None,
    steps: int,
    scheduler: str,
    state: dict[str, Any],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write_generator(tmp / "generator", name, modules, steps, scheduler)
    torch.save(state, tmp / "trainer.pt")
    _replace(tmp, out / CHECKPOINT)
    export_tmp = out / (EXPORT + ".tmp")
    if export_tmp.exists():
        shutil.rmtree(export_tmp)
    write_generator(export_tmp, name, ema_modules or modules, steps, scheduler)
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
