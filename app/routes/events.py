"""Server-Sent Events: block-ready notices, so map pages replace pending tiles in place."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from app.cascade import EVENTS_CHANNEL
from app.context import Context, get_context

router = APIRouter(tags=["events"])

KEEPALIVE_SECONDS = 15.0


@router.get("/events", summary="Stream of generated blocks (text/event-stream)")
async def events(
    request: Request,
    layer: str | None = Query(None, description="Only this layer's blocks"),
    ctx: Context = Depends(get_context),
) -> StreamingResponse:
    if layer is not None:
        ctx.layer(layer)  # unknown layers are a 404, not an empty stream
    return StreamingResponse(
        block_events(request, ctx, layer),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def block_events(request: Request, ctx: Context, layer: str | None) -> AsyncIterator[str]:
    pubsub = ctx.aredis.pubsub()
    await pubsub.subscribe(EVENTS_CHANNEL)
    try:
        yield "retry: 3000\n: connected\n\n"
        while not await request.is_disconnected():
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=KEEPALIVE_SECONDS
            )
            if message is None:
                yield ": keepalive\n\n"
                continue
            data = message["data"].decode()
            if layer is None or json.loads(data).get("layer") == layer:
                yield f"event: block\ndata: {data}\n\n"
    finally:
        await pubsub.unsubscribe(EVENTS_CHANNEL)
        await pubsub.aclose()
