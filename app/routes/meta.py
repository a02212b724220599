"""Service description and operations: TileJSON, liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from rq import Worker

from app.auth import is_trusted_proxy
from app.context import Context, get_context
from app.errors import documented
from app.routes.params import LAYER_PATH_PARAM, requested_layer
from app.settings import Layer

log = logging.getLogger(__name__)

router = APIRouter(tags=["service"], responses=documented())


def public_base_url(request: Request, ctx: Context) -> str:
    """The URL clients reach us by: MAPCASCADE_PUBLIC_URL when set; else the request's, with a
    trusted proxy's forwarded host and prefix (anyone else's are ignored, not reflected)."""
    if ctx.settings.public_url:
        return ctx.settings.public_url.rstrip("/")
    h = request.headers if is_trusted_proxy(request, ctx) else {}
    scheme = h.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = h.get("x-forwarded-host", request.url.netloc).split(",")[0].strip()
    prefix = h.get("x-forwarded-prefix", "").rstrip("/")
    root_path = request.scope.get("root_path", "").rstrip("/")
    return f"{scheme}://{host}{prefix}{root_path}"


def tilejson(request: Request, ctx: Context, layer: Layer) -> dict:
    base = public_base_url(request, ctx)
    default = layer.name == ctx.settings.default_layer.name
    path = "/tiles/{z}/{x}/{y}.png" if default else f"/tiles/{layer.name}/{{z}}/{{x}}/{{y}}.png"
    return {
        "tilejson": "3.0.0",
        "name": layer.name,
        "description": layer.title,
        "version": "1.0.0",
        "attribution": layer.attribution,
        "scheme": "xyz",
        "tiles": [base + path],
        "minzoom": layer.root_zoom,
        "maxzoom": layer.max_zoom,
        "bounds": list(layer.bounds),
        "center": list(layer.center),
    }


@router.get("/tiles.json", summary="TileJSON 3.0.0 of the default layer")
@router.get("/{layer}/tiles.json", summary="TileJSON 3.0.0 of a layer", responses=documented(404),
            openapi_extra=LAYER_PATH_PARAM)  # fmt: skip
async def tilejson_of(request: Request, ctx: Context = Depends(get_context)) -> dict:
    return tilejson(request, ctx, requested_layer(request, ctx))


@router.get("/layers", summary="The configured layers")
async def layers(request: Request, ctx: Context = Depends(get_context)) -> dict:
    return {
        "default": ctx.settings.default_layer.name,
        "layers": [tilejson(request, ctx, layer) for layer in ctx.settings.layers.values()],
    }


@router.get("/health", summary="Liveness: the API process answers")
async def health() -> dict:
    return {"status": "ok"}


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    redis: Literal["ok", "unreachable"]
    workers: int | None = None


@router.get(
    "/ready",
    summary="Readiness: Redis reachable and at least one worker alive",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: no worker, or no Redis"}},
)
def ready(ctx: Context = Depends(get_context)) -> JSONResponse:
    try:
        ctx.redis.ping()
        workers = Worker.count(queue=ctx.cascade.queue)
    except RedisError as e:
        log.warning("readiness: Redis unreachable: %s", e)
        return JSONResponse({"status": "unavailable", "redis": "unreachable"}, status_code=503)
    body = {"status": "ready" if workers else "unavailable", "redis": "ok", "workers": workers}
    return JSONResponse(
        body, status_code=200 if workers else 503, headers={"Cache-Control": "no-store"}
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(ctx: Context = Depends(get_context)) -> Response:
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
