"""Generator: the contract the worker codes against — load a model once, turn blocks into maps.

A checkpoint folder holds generator.json plus one diffusers folder (config.json +
diffusion_pytorch_model.safetensors) per module: unet/, vae/, mfencoder/, sfadapter/,
scale_encoder/. model_id names config and weights ("tiny-3f2a9c1e"); it is computed from the
fp32 weights before any dtype cast, so it is the same for a built model and its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from model import configs
from model.configs import COMPONENT_CLASSES, Components
from model.pipeline import MapPipeline
from model.request import BLOCK_SIZE, BlockRequest
from model.schedulers import SCHEDULER_NAMES

__all__ = ["BlockRequest", "Generator", "model_id_of"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mapcascade-generator"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def model_id_of(name: str, modules: Mapping[str, Any]) -> str:  # name -> diffusers model
    """name + 8 hex digits of a hash over every module's config and fp32 weights."""
    digest = hashlib.blake2b(digest_size=4)
    for key in sorted(modules):
        module = modules[key]
        config = {k: v for k, v in dict(module.config).items() if not k.startswith("_")}
        digest.update(key.encode())
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for param_name, tensor in sorted(module.state_dict().items()):
            digest.update(param_name.encode())
            data = tensor.detach().to("cpu")
            if data.is_floating_point():
                data = data.float()
            # numpy's stubs lack the buffer protocol on 3.11; the array is one (no copy made).
            digest.update(np.ascontiguousarray(data.numpy()).view(np.uint8))  # type: ignore[arg-type]
    return f"{name}-{digest.hexdigest()}"


class Generator:
    """Turns BlockRequests into 512x512 RGB maps with one loaded model."""

    def __init__(
        self,
        pipeline: MapPipeline,
        name: str,
        model_id: str,
        steps: int,
        scheduler: str = "ddpm",
        batch_invariant: bool | None = None,
        strength: float = 1.0,
    ) -> None:
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if strength < 1 and pipeline.mfencoder.map_head is None:
            raise ValueError(
                f"strength {strength} needs a model with a map head: blocks start from "
                "its sketch of the imagery (mapcascade train --map-head-only)"
            )
        if scheduler not in SCHEDULER_NAMES:
            raise ValueError(f"unknown scheduler {scheduler!r} ({', '.join(SCHEDULER_NAMES)})")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.pipeline = pipeline
        self.name = name
        self.model_id = model_id
        self.steps = steps
        self.scheduler = scheduler
        self.strength = strength
        # On CPU batching buys ~nothing, so default to bit-identical results whatever the
        # batch (regenerated blocks match their first rendering); on GPUs throughput wins and
        # batch mates may move a few pixels by one level.
        if batch_invariant is None:
            batch_invariant = pipeline.device.type == "cpu"
        self.batch_invariant = batch_invariant

    @classmethod
    def from_components(
        cls,
        components: Components,
        device: str = "cpu",
        dtype: str = "fp32",
        steps: int | None = None,
        scheduler: str | None = None,
        batch_invariant: bool | None = None,
        strength: float = 1.0,
    ) -> Generator:
        pipeline = MapPipeline(**components.modules(), prediction_type=components.prediction_type)
        model_id = model_id_of(components.name, pipeline.modules())
        pipeline.to(device, _torch_dtype(dtype))
        logger.info("loaded generator %s on %s (%s)", model_id, device, dtype)
        return cls(
            pipeline,
            components.name,
            model_id,
            steps or components.steps,
            scheduler or components.scheduler,
            batch_invariant,
            strength,
        )

    @classmethod
    def load(
        cls,
        name_or_path: str,
        device: str = "cpu",
        dtype: str = "fp32",
        steps: int | None = None,
        *,
        scheduler: str | None = None,
        batch_invariant: bool | None = None,
        strength: float = 1.0,
    ) -> Generator:
        """Load a configuration of `configs.REGISTRY` ("demo", "tiny", "sd21") or a checkpoint
        folder written by save_pretrained."""
        _torch_dtype(dtype)  # fail before building anything large
        if name_or_path in configs.REGISTRY:
            components = configs.REGISTRY[name_or_path].load()
        elif Path(name_or_path).is_dir():
            components = load_components(Path(name_or_path))
        else:
            raise ValueError(
                f"{name_or_path!r} is neither a configuration "
                f"({', '.join(configs.CONFIG_NAMES)}) nor a checkpoint folder"
            )
        return cls.from_components(
            components, device, dtype, steps, scheduler, batch_invariant, strength
        )

    def with_sampling(self, steps: int | None = None, strength: float = 1.0) -> Generator:
        """This loaded model with other sampling settings: no second copy of its weights."""
        return Generator(self.pipeline, self.name, self.model_id, steps or self.steps,
                         self.scheduler, self.batch_invariant, strength)  # fmt: skip

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a checkpoint folder; Generator.load(directory) gives identical outputs."""
        write_checkpoint(
            Path(directory),
            self.pipeline.modules(),
            name=self.name,
            steps=self.steps,
            scheduler=self.scheduler,
            prediction_type=self.pipeline.prediction_type,
            model_id=self.model_id,
        )

    def generate(self, requests: Sequence[BlockRequest]) -> list[Image.Image]:
        """One RGB 512x512 map per request (the centre of its frame), in order; the whole list
        runs as one batch."""
        for index, request in enumerate(requests):
            _check_request(index, request, requests[0].margin)
        frames = self.pipeline(
            requests,
            steps=self.steps,
            scheduler=self.scheduler,
            batch_invariant=self.batch_invariant,
            strength=self.strength,
        )
        return [
            frame.crop((r.margin, r.margin, r.margin + BLOCK_SIZE, r.margin + BLOCK_SIZE))
            for frame, r in zip(frames, requests, strict=True)
        ]


def load_components(directory: Path) -> Components:
    meta_path = directory / "generator.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory} is not a generator checkpoint (no generator.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{meta_path}: unknown checkpoint format {meta.get('format')!r}")
    # Our checkpoints are small: plain loading, no `accelerate` (and no warning asking for it).
    modules = {
        key: _module_class(directory / key, classes).from_pretrained(
            directory / key, low_cpu_mem_usage=False
        )
        for key, classes in COMPONENT_CLASSES.items()
    }
    return Components(
        name=meta["name"],
        steps=meta["steps"],
        scheduler=meta["scheduler"],
        # Checkpoints from before the field was recorded are epsilon models.
        prediction_type=meta.get("prediction_type", "epsilon"),
        **modules,
    )


def write_checkpoint(
    directory: Path,
    modules: Mapping[str, Any],
    *,
    name: str,
    steps: int,
    scheduler: str,
    prediction_type: str,
    model_id: str | None = None,
) -> str:
    """generator.json + one diffusers folder per module; returns the model id it recorded
    (computed from `modules` unless given)."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, module in modules.items():
        module.save_pretrained(directory / key, safe_serialization=True)
        drop_source_path(directory / key / "config.json")
    model_id = model_id or model_id_of(name, modules)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "name": name,
        "model_id": model_id,
        "steps": steps,
        "scheduler": scheduler,
        "prediction_type": prediction_type,
    }
    (directory / "generator.json").write_text(json.dumps(meta, indent=2) + "\n")
    return model_id


def _module_class(folder: Path, classes: tuple[type, ...]) -> Any:  # a ModelMixin class
    """The class a module folder was saved from (its config's `_class_name`)."""
    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    for cls in classes:
        if cls.__name__ == name:
            return cls
    allowed = ", ".join(c.__name__ for c in classes)
    raise ValueError(f"{folder}: module class {name!r} is not one of {allowed}")


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} ({' | '.join(DTYPES)})")
    return DTYPES[dtype]


def _check_request(index: int, request: BlockRequest, batch_margin: int) -> None:
    if request.margin < 0 or request.margin != batch_margin:
        raise ValueError(f"request {index}: margin {request.margin}; a batch needs one margin >= 0")
    side = BLOCK_SIZE + 2 * request.margin
    size = (side, side)
    if request.imagery.size != size:
        raise ValueError(f"request {index}: imagery is {request.imagery.size}, needs {size}")
    if request.reference is not None and request.reference.size != size:
        raise ValueError(f"request {index}: reference is {request.reference.size}, needs {size}")
    if (request.reference is None) != (request.scale.span == 0):
        raise ValueError(
            f"request {index}: reference {'missing' if request.reference is None else 'given'} "
            f"but scale.span is {request.scale.span} (0 means no reference)"
        )


def drop_source_path(config: Path) -> None:
    """diffusers records where a module was loaded from; a shipped checkpoint must not."""
    data = json.loads(config.read_text())
    if data.pop("_name_or_path", None) is not None:
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
