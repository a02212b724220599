"""The XYZ tile endpoints: cached tiles with HTTP caching, misses enqueue their block."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from PIL import Image

from app.archive import archive_tile
from app.cascade import BlockState, State
from app.context import Context, get_context
from app.errors import (
    GenerationFailed,
    NotFound,
    OutsideLayer,
    UnsupportedFormat,
    documented,
)
from app.routes.params import LAYER_PATH_PARAM, charged_client, requested_layer
from app.settings import Layer
from app.store import StoredTile, imagery_of
from app.tiles import PLAIN_TILE_NUMBER, TILE_SIZE, Block, Tile, ancestor_of, check_tile, intersects

NUMBER = re.compile(r"[+-]?[0-9]+(\.0*)?")  # what the int parameters would accept
CANONICAL = re.compile(r"0|-?[1-9][0-9]*")
PLAIN_NUMBER = re.compile(PLAIN_TILE_NUMBER)


async def canonical_numbers(request: Request) -> None:
    """One URL per tile: `16` is a tile number, `016`, `+16` and `16.0` are not (they would
    otherwise be parsed to the same tile and cached under several URLs)."""
    for name in ("z", "x", "y"):
        raw = request.path_params.get(name, "")
        if NUMBER.fullmatch(raw) and not CANONICAL.fullmatch(raw):
            raise NotFound(f"{name} {raw!r} is not written as a tile number (no sign, leading "
                           "zero or decimals)")  # fmt: skip


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (If-None-Match / If-Modified-Since)"}
}
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "A 256x256 PNG tile"}
}
router = APIRouter(
    tags=["tiles"],
    dependencies=[Depends(canonical_numbers)],
    responses=documented(404, 415, 422, 429, 503),
)

# How far up the interim tile looks for a generated ancestor: beyond 8 levels it is < 1 px.
INTERIM_MAX_LEVELS = 8

Wait = Annotated[
    float | None,
    Query(ge=0, description="Seconds to wait for a tile being generated before the interim tile"),
]


def tile_in_layer(layer: Layer, z: int, x: int, y: int, fmt: str) -> Tile:
    if fmt != "png":
        raise UnsupportedFormat(f"unknown tile format {fmt!r}: tiles are served as .png")
    tile = check_tile(z, x, y)
    if not layer.root_zoom <= z <= layer.max_zoom:
        raise OutsideLayer(
            f"zoom {z} is outside layer {layer.name!r} ({layer.root_zoom}..{layer.max_zoom})"
        )
    if not intersects(tile, layer.bounds):
        raise OutsideLayer(f"tile {z}/{x}/{y} is outside the bounds of layer {layer.name!r}")
    return tile


class TileRoute(APIRoute):
    """A tile route as FastAPI documents and validates it, answered without FastAPI's
    per-request parameter solving when the URL is plain (tile numbers as canonical_numbers wants
    them, no ?wait=). That solving (path and query parameters, two dependencies) took a quarter
    of a cache hit's time (benchmarks/serve/profile_hits.py). Every other request goes through
    FastAPI's handler, so its validation errors stay exactly FastAPI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        validated = super().get_route_handler()

        async def plain_or_validated(request: Request) -> Response:
            p = request.path_params
            plain = all(PLAIN_NUMBER.fullmatch(p[k]) for k in "zxy")
            if not plain or "wait" in request.query_params:
                return await validated(request)
            ctx: Context = request.app.state.context
            layer = requested_layer(request, ctx)
            return await serve_tile(
                request, ctx, layer, int(p["z"]), int(p["x"]), int(p["y"]), p["fmt"], None
            )

        return plain_or_validated


async def tile(
    request: Request, z: int, x: int, y: int, fmt: str, wait: Wait = None,
    ctx: Context = Depends(get_context),
) -> Response:  # fmt: skip
    return await serve_tile(request, ctx, requested_layer(request, ctx), z, x, y, fmt, wait)


router.add_api_route("/tiles/{z}/{x}/{y}.{fmt}", tile, methods=["GET", "HEAD"],
                     summary="Default layer tile", response_class=Response,
                     responses={**PNG, **NOT_MODIFIED}, route_class_override=TileRoute)  # fmt: skip
router.add_api_route("/tiles/{layer}/{z}/{x}/{y}.{fmt}", tile, methods=["GET", "HEAD"],
                     summary="Layer tile", response_class=Response,
                     responses={**PNG, **NOT_MODIFIED}, openapi_extra=LAYER_PATH_PARAM,
                     route_class_override=TileRoute)  # fmt: skip


@router.api_route(
    "/imagery/{layer}/{z}/{x}/{y}.{fmt}", methods=["GET", "HEAD"], summary="Imagery under a tile",
    response_class=Response, responses={**PNG, **NOT_MODIFIED},
)  # fmt: skip
async def layer_imagery(
    request: Request, layer: str, z: int, x: int, y: int, fmt: str,
    ctx: Context = Depends(get_context),
) -> Response:  # fmt: skip
    """The imagery a generated tile was drawn from, as the model saw it (overviews and
    overzoom included), for laying the map over it. 404 until the tile's block is generated:
    imagery is read by the workers only."""
    tile = tile_in_layer(ctx.layer(layer), z, x, y, fmt)
    stored = await ctx.store.get_async(imagery_of(layer), tile)
    if stored is None:
        raise NotFound(f"no imagery stored for tile {z}/{x}/{y} of layer {layer!r} yet")
    return final_response(request, ctx, stored, "HIT")


@router.get("/tiles/{z}/{x}/{y}/meta", summary="How the default layer's tile was generated")
@router.get("/tiles/{layer}/{z}/{x}/{y}/meta", summary="How a layer's tile was generated",
            openapi_extra=LAYER_PATH_PARAM)  # fmt: skip
async def meta(
    request: Request, z: int, x: int, y: int, ctx: Context = Depends(get_context)
) -> dict:
    return await run_in_threadpool(tile_meta, ctx, requested_layer(request, ctx), z, x, y)


def tile_meta(ctx: Context, layer: Layer, z: int, x: int, y: int) -> dict:
    tile = tile_in_layer(layer, z, x, y, "png")
    block = Block.of(layer.name, tile)
    meta = ctx.store.block_meta(block)
    if meta is None:
        raise NotFound(f"tile {z}/{x}/{y} of layer {layer.name!r} has not been generated yet")
    return {"tile": [z, x, y], "block": [block.z, block.x, block.y], **meta}


async def serve_tile(
    request: Request,
    ctx: Context,
    layer: Layer,
    z: int,
    x: int,
    y: int,
    fmt: str,
    wait: float | None,
) -> Response:
    tile = tile_in_layer(layer, z, x, y, fmt)
    if layer.source is not None:  # read-only: served from the archive, never generated
        stored = archive_tile(layer.source, tile)
        if stored is None:
            raise NotFound(f"tile {z}/{x}/{y} is not in the archive of layer {layer.name!r}")
    else:
        stored = await ctx.store.get_async(layer.name, tile)
    if stored is not None:
        ctx.metrics.cache.labels("hit").inc()
        return final_response(request, ctx, stored, "HIT")
    ctx.metrics.cache.labels("miss").inc()

    block = Block.of(layer.name, tile)
    state = await run_in_threadpool(ctx.cascade.ensure, layer, block, charged_client(request, ctx))
    wait = min(ctx.settings.wait_default if wait is None else wait, ctx.settings.wait_max)
    state = await wait_for_block(ctx, block, state, wait)
    if state.state == State.FAILED:
        raise GenerationFailed(
            f"generating tile {z}/{x}/{y} failed: {state.reason}",
            retry_after=state.retry_after,
            job=state.job_id,
        )
    stored = await ctx.store.get_async(layer.name, tile)
    if stored is not None:
        return final_response(request, ctx, stored, "MISS")
    return await interim_response(request, ctx, layer, tile)


async def wait_for_block(ctx: Context, block: Block, state: BlockState, wait: float) -> BlockState:
    deadline = time.monotonic() + wait
    polls = 0
    while state.state == State.PENDING and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        polls += 1
        if await ctx.store.has_block_async(block):
            return BlockState(State.READY)
        if polls % 5 == 0:  # the job status costs Redis round trips; the store check is cheap
            state = await run_in_threadpool(ctx.cascade.state, block)
    return state


def final_response(request: Request, ctx: Context, stored: StoredTile, cache: str) -> Response:
    headers = {
        "ETag": stored.etag,
        "Last-Modified": formatdate(stored.mtime, usegmt=True),
        "Cache-Control": f"public, max-age={ctx.settings.cache_max_age}",
        "X-Cache": cache,
        "X-Tile-Status": "final",
    }
    if not_modified(request, stored):
        return Response(status_code=304, headers=headers)
    return png_response(request, stored.data, headers)


def not_modified(request: Request, stored: StoredTile) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:  # it takes precedence over If-Modified-Since (RFC 9110)
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or stored.etag in tags
    since = request.headers.get("if-modified-since")
    if since:
        try:
            return int(stored.mtime) <= parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError, OverflowError):
            return False  # an unparseable date is ignored, as the RFC asks
    return False


async def interim_response(request: Request, ctx: Context, layer: Layer, tile: Tile) -> Response:
    headers = {"Cache-Control": "no-store", "X-Tile-Status": "pending", "X-Cache": "MISS"}
    # In the thread pool: it reads ancestors from the store and resamples an image.
    data = await run_in_threadpool(interim_tile, ctx, layer, tile)
    return png_response(request, data, headers)


def interim_tile(ctx: Context, layer: Layer, tile: Tile) -> bytes:
    """The nearest generated ancestor's area, cropped and upsampled; transparent if none."""
    for zoom in range(tile.z - 1, max(layer.root_zoom, tile.z - INTERIM_MAX_LEVELS) - 1, -1):
        ancestor = ancestor_of(tile, zoom)
        stored = ctx.store.get(layer.name, ancestor)
        if stored is None:
            continue
        levels = tile.z - zoom
        size = TILE_SIZE >> levels
        left = (tile.x - (ancestor.x << levels)) * size
        top = (tile.y - (ancestor.y << levels)) * size
        with Image.open(io.BytesIO(stored.data)) as img:
            crop = img.crop((left, top, left + size, top + size))
            out = crop.resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        out.save(buf, format="PNG")
        return buf.getvalue()
    return transparent_tile()


@lru_cache(maxsize=1)
def transparent_tile() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (TILE_SIZE, TILE_SIZE), (0, 0, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def png_response(request: Request, data: bytes, headers: dict[str, str]) -> Response:
    if request.method == "HEAD":
        headers = {**headers, "Content-Length": str(len(data))}
        return Response(status_code=200, media_type="image/png", headers=headers)
    return Response(content=data, media_type="image/png", headers=headers)
