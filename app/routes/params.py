"""Typed request parameters shared by the routes: the layer a path names, the client a miss is
charged to."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.auth import has_admin_token
from app.context import Context, get_context
from app.settings import Layer


def requested_layer(request: Request, ctx: Context = Depends(get_context)) -> Layer:
    """The layer a path names ({layer}), or the default layer on paths without one."""
    return ctx.layer(request.path_params.get("layer"))


def requesting_client(request: Request, ctx: Context = Depends(get_context)) -> str | None:
    """Whom a miss is charged to: None (unbounded) for admins, else the client address."""
    if has_admin_token(request, ctx):
        return None
    return request.client.host if request.client else "?"


RequestedLayer = Annotated[Layer, Depends(requested_layer)]
RequestingClient = Annotated[str | None, Depends(requesting_client)]
# The named-layer variant of a path: its {layer} documented (read by requested_layer).
LAYER_PATH_PARAM = {"parameters": [
    {"name": "layer", "in": "path", "required": True, "schema": {"type": "string"}},
]}  # fmt: skip
