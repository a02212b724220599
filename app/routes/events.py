"""Server-Sent Events: block-ready notices, so map pages replace pending tiles in place."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.context import Context, get_context
from app.errors import documented
from app.events import EventHub, Subscription

router = APIRouter(tags=["events"], responses=documented(404, 422, 503))

KEEPALIVE_SECONDS = 15.0


class EventStream(StreamingResponse):
    """The stream of one viewer; its subscription ends with the response, however it ends
    (a client gone before the first byte never starts the generator)."""

    def __init__(self, hub: EventHub, subscription: Subscription) -> None:
        super().__init__(
            block_events(subscription),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self.hub, self.subscription = hub, subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.hub.unsubscribe(self.subscription)


@router.get(
    "/events",
    summary="Stream of generated blocks (text/event-stream)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "One `block` event each"},
    },
)
async def events(
    layer: str | None = Query(None, description="Only this layer's blocks"),
    ctx: Context = Depends(get_context),
) -> StreamingResponse:
    if layer is not None:
        ctx.layer(layer)  # unknown layers are a 404, not an empty stream
    return EventStream(ctx.events, await ctx.events.subscribe(layer))


async def block_events(subscription: Subscription) -> AsyncIterator[str]:
    # A gone client is noticed when a write fails: at the latest with the next keepalive.
    yield "retry: 3000\n: connected\n\n"
    while True:
        try:
            data = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE_SECONDS)
        except TimeoutError:
            yield ": keepalive\n\n"
            continue
        yield f"event: block\ndata: {data}\n\n"
