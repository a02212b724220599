"""What every request handler needs, built once per app: settings, store, Redis, queue, metrics."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from fastapi import Request
from redis.asyncio import Redis as AsyncRedis

from app.cascade import BlockQueue
from app.errors import UnknownLayer
from app.events import EventHub
from app.metrics import Metrics
from app.settings import Layer, Settings
from app.store import TileStore, open_store


@dataclass
class Context:
    settings: Settings
    store: TileStore
    redis: redis.Redis
    cascade: BlockQueue
    metrics: Metrics
    events: EventHub

    @classmethod
    def build(cls, settings: Settings) -> Context:
        sync = redis.Redis.from_url(settings.redis_url)
        store = open_store(settings)
        cascade = BlockQueue(sync, store, settings)
        return cls(
            settings=settings,
            store=store,
            redis=sync,
            cascade=cascade,
            metrics=Metrics(sync, cascade.queue_depth),
            events=EventHub(AsyncRedis.from_url(settings.redis_url), settings.max_event_viewers),
        )

    def layer(self, name: str | None) -> Layer:
        if name is None:
            return self.settings.default_layer
        try:
            return self.settings.layers[name]
        except KeyError:
            raise UnknownLayer(
                f"unknown layer {name!r}", layers=sorted(self.settings.layers)
            ) from None


async def get_context(request: Request) -> Context:
    # async: a plain function would cost every request a hop through the thread pool.
    return request.app.state.context
