"""Request parameters shared by the routes: the layer a path names and the client a miss is
charged to. Plain calls, not FastAPI dependencies: on the cached-tile path each dependency cost
measurable throughput (a sync one, run in the thread pool, halved it; an async one ~5 %)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.auth import has_admin_token
from app.context import Context
from app.settings import Layer
from app.tiles import MAX_ZOOM


def requested_layer(request: Request, ctx: Context) -> Layer:
    """The layer a path names ({layer}), or the default layer on paths without one."""
    return ctx.layer(request.path_params.get("layer"))


def charged_client(request: Request, ctx: Context) -> str | None:
    """Whom a miss is charged to: None (unbounded) for admins, else the client address."""
    if has_admin_token(request, ctx):
        return None
    return request.client.host if request.client else "?"


# The named-layer variant of a path: its {layer} documented (read by requested_layer).
LAYER_PATH_PARAM = {"parameters": [
    {"name": "layer", "in": "path", "required": True, "schema": {"type": "string"}},
]}  # fmt: skip


Zoom = Annotated[int, Field(ge=0, le=MAX_ZOOM)]


class AreaBody(BaseModel):
    """The area of an admin request body (seed, truncate, export): a layer, a bbox and a zoom
    range (checked against the layer by app.seeding.plan.check_area)."""

    model_config = ConfigDict(extra="forbid")

    layer: str | None = Field(None, description="Layer name; the default layer when omitted")
    bbox: list[float] = Field(description="[west, south, east, north] in degrees (WGS84)")
    minzoom: Zoom
    maxzoom: Zoom

    @field_validator("bbox")
    @classmethod
    def _four_numbers(cls, bbox: list[float]) -> list[float]:
        if len(bbox) != 4:
            raise ValueError(f"bbox must be 4 numbers [west, south, east, north], got {len(bbox)}")
        return bbox

    @property
    def area(self) -> tuple[float, float, float, float]:
        west, south, east, north = self.bbox
        return west, south, east, north
