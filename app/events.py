"""Block-ready events fanned out to every /events viewer from one Redis subscription per process.

A connection per viewer would hit the Redis pool's limit at 100 viewers and cost Redis a client
each; here one reader task subscribes once and copies each message into a bounded queue per
viewer. A viewer that stops reading loses its oldest events, never blocks the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from app.blockjob import EVENTS_CHANNEL
from app.errors import Unavailable

log = logging.getLogger(__name__)

VIEWER_BUFFER = 256  # events kept for a viewer that reads slowly
SUBSCRIBE_TIMEOUT_S = 5.0
RECONNECT_S = 1.0


@dataclass(eq=False)
class Subscription:
    layer: str | None  # None: every layer's blocks
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(VIEWER_BUFFER))

    def offer(self, data: str) -> None:
        if self.queue.full():  # drop the oldest: the viewer re-reads tiles it missed anyway
            self.queue.get_nowait()
        self.queue.put_nowait(data)


class EventHub:
    def __init__(self, redis: AsyncRedis, max_viewers: int) -> None:
        self.redis = redis
        self.max_viewers = max_viewers
        self.viewers: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def subscribe(self, layer: str | None) -> Subscription:
        """A new viewer's queue, once the process listens (so no event after this is lost)."""
        if len(self.viewers) >= self.max_viewers:
            raise Unavailable(
                f"this server streams events to {self.max_viewers} viewers at most; "
                "tiles still load without them",
                retry_after=30,
            )
        if self._loop is not asyncio.get_running_loop():  # first viewer, or a new test client
            self._loop = asyncio.get_running_loop()
            self._subscribed = asyncio.Event()
            self._reader = asyncio.create_task(self._read(), name="mapcascade-events")
        try:
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            raise Unavailable("the event stream is unavailable (Redis)", retry_after=5) from None
        subscription = Subscription(layer)
        self.viewers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.viewers.discard(subscription)

    async def close(self) -> None:
        if self._reader is not None and self._loop is asyncio.get_running_loop():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            await self.redis.aclose()
        self._reader, self._loop = None, None

    async def _read(self) -> None:
        while True:  # Redis restarts: resubscribe and go on
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(EVENTS_CHANNEL)
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._fan_out(message["data"].decode())
            except (RedisError, OSError) as e:
                log.warning("event subscription lost (%s); resubscribing", e)
            finally:
                self._subscribed.clear()
                await pubsub.aclose()
            await asyncio.sleep(RECONNECT_S)

    def _fan_out(self, data: str) -> None:
        try:
            layer = json.loads(data).get("layer")
        except (ValueError, AttributeError):
            log.warning("ignored a malformed event: %.200s", data)
            return
        for viewer in self.viewers:
            if viewer.layer is None or viewer.layer == layer:
                viewer.offer(data)
