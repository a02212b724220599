"""Per-process worker state: settings, store, Redis, models and imagery sources, loaded once."""

from __future__ import annotations

import logging
import os
import socket
from functools import cache

from redis import Redis

from app.settings import Layer, Settings
from app.store import open_store
from model import Generator
from worker.imagery import open_source
from worker.imagery.base import ImagerySource

log = logging.getLogger(__name__)


class WorkerContext:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = open_store(settings)
        self.redis = Redis.from_url(settings.redis_url)
        self._models: dict[str, Generator] = {}  # loaded once per model, whatever the layers
        self._sources: dict[str, ImagerySource] = {}

    def layer(self, name: str) -> Layer:
        return self.settings.layers[name]

    def generator(self, layer: Layer) -> Generator:
        """The layer's model with the layer's sampling settings; layers that share a model
        share its one loaded copy."""
        if layer.model not in self._models:
            s = self.settings
            log.info("loading model %s on %s (%s)", layer.model, s.device, s.dtype)
            self._models[layer.model] = Generator.load(
                model_location(layer.model, s), device=s.device, dtype=s.dtype
            )
        return self._models[layer.model].with_sampling(layer.steps, layer.strength)

    def source(self, layer: Layer) -> ImagerySource:
        if layer.name not in self._sources:
            if layer.imagery is None:  # an archive layer: served read-only, never generated
                raise ValueError(f"layer {layer.name!r} is served from an archive, not generated")
            self._sources[layer.name] = open_source(layer.imagery)
        return self._sources[layer.name]

    def warm_up(self) -> None:
        """Load every layer's model before the first job, so no request pays for it."""
        for layer in self.settings.layers.values():
            self.generator(layer)


def model_location(model: str, settings: Settings) -> str:
    """A model name, or a folder under the weights volume when one by that name exists there."""
    if settings.weights_dir is not None and (settings.weights_dir / model).is_dir():
        return str(settings.weights_dir / model)
    return model


def worker_name() -> str:
    """This process's RQ worker name; block lock tokens carry it (`runner.recover_dead_workers`)."""
    return f"{socket.gethostname()}.{os.getpid()}"


@cache
def current() -> WorkerContext:
    return WorkerContext(Settings())
