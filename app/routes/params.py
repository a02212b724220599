"""Request parameters shared by the routes: the layer a path names (a typed dependency, async:
FastAPI runs a plain `def` dependency in its thread pool, a hop that halved the cached-tile
throughput of benchmarks/serve) and the client a miss is charged to."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.auth import has_admin_token
from app.context import Context, get_context
from app.settings import Layer


async def requested_layer(request: Request, ctx: Context = Depends(get_context)) -> Layer:
    """The layer a path names ({layer}), or the default layer on paths without one."""
    return ctx.layer(request.path_params.get("layer"))


def charged_client(request: Request, ctx: Context) -> str | None:
    """Whom a miss is charged to: None (unbounded) for admins, else the client address. A plain
    call on the miss path, not a dependency: a hit should not pay for it (~7 % of throughput)."""
    if has_admin_token(request, ctx):
        return None
    return request.client.host if request.client else "?"


RequestedLayer = Annotated[Layer, Depends(requested_layer)]
# The named-layer variant of a path: its {layer} documented (read by requested_layer).
LAYER_PATH_PARAM = {"parameters": [
    {"name": "layer", "in": "path", "required": True, "schema": {"type": "string"}},
]}  # fmt: skip
