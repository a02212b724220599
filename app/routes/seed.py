"""Seeding and truncation endpoints: POST/GET/DELETE /seed, DELETE /tiles (docs/seed.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from app.auth import require_admin
from app.context import Context, get_context
from app.errors import InvalidRequest, documented
from app.routes.meta import public_base_url
from app.routes.params import AreaBody
from app.seeding import SeedRunner, Seeds, check_area, describe, plan_seed, truncate
from app.tiles import MAX_ZOOM


def runner_of(app: FastAPI) -> SeedRunner:
    runner = getattr(app.state, "seed_runner", None)
    if runner is None:
        ctx: Context = app.state.context
        runner = app.state.seed_runner = SeedRunner(Seeds(ctx.redis, ctx.cascade))
    return runner


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Seeds whose enqueueing an earlier API process left unfinished go on here.
    runner = runner_of(app)
    await run_in_threadpool(runner.resume_all)
    yield
    await run_in_threadpool(runner.stop)


router = APIRouter(tags=["seed"], lifespan=lifespan, responses=documented(401, 403, 404, 422))


def get_runner(request: Request) -> SeedRunner:
    return runner_of(request.app)


Ctx = Annotated[Context, Depends(get_context)]
Runner = Annotated[SeedRunner, Depends(get_runner)]


@router.post(
    "/seed",
    status_code=202,
    dependencies=[Depends(require_admin)],
    summary="Pre-generate a bbox over a zoom range (admin)",
)
async def create_seed(
    body: AreaBody,
    request: Request,
    response: Response,
    ctx: Ctx,
    runner: Runner,
) -> dict:
    layer = ctx.layer(body.layer)
    plan = plan_seed(layer, body.area, body.minzoom, body.maxzoom, ctx.settings.max_seed_tiles)
    seed_id = await run_in_threadpool(runner.seeds.create, plan)
    runner.start(seed_id)
    status_url = f"{public_base_url(request, ctx)}/seed/{seed_id}"
    response.headers["Location"] = status_url
    return {
        "id": seed_id,
        "status": "queued",
        "layer": layer.name,
        "bbox": list(plan.bbox),
        "minzoom": plan.minzoom,
        "maxzoom": plan.maxzoom,
        "blocks": plan.blocks,
        "tiles": plan.tiles,
        "status_url": status_url,
    }


@router.get("/seed", dependencies=[Depends(require_admin)], summary="Recent seeds (admin)")
async def list_seeds(
    request: Request,
    runner: Runner,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict:
    seeds = runner.seeds
    base = public_base_url(request, ctx)
    records = await run_in_threadpool(lambda: [seeds.record(i) for i in seeds.ids(limit)])
    return {"seeds": [describe(rec, base) for rec in records]}


@router.get("/seed/{seed_id}", summary="A seed's status, progress and ETA")
async def seed_status(
    seed_id: str, request: Request, response: Response, runner: Runner, ctx: Ctx
) -> dict:
    rec = await run_in_threadpool(runner.seeds.record, seed_id)
    runner.resume_if_needed(rec)  # its enqueuer may have died with another API process
    response.headers["Cache-Control"] = "no-store"
    return describe(rec, public_base_url(request, ctx))


@router.delete(
    "/seed/{seed_id}", dependencies=[Depends(require_admin)], summary="Cancel a seed (admin)"
)
async def cancel_seed(seed_id: str, request: Request, runner: Runner, ctx: Ctx) -> dict:
    rec = await run_in_threadpool(runner.seeds.cancel, seed_id)
    return describe(rec, public_base_url(request, ctx))


@router.delete(
    "/tiles",
    dependencies=[Depends(require_admin)],
    summary="Remove tiles of a bbox and all their descendants (admin)",
)
async def truncate_tiles(
    request: Request,
    ctx: Ctx,
    bbox: Annotated[str | None, Query(description="west,south,east,north")] = None,
    minzoom: Annotated[int | None, Query(ge=0, le=MAX_ZOOM)] = None,
    maxzoom: Annotated[int | None, Query(ge=0, le=MAX_ZOOM)] = None,
    layer: str | None = None,
) -> dict:
    area = await truncate_request(request, bbox, minzoom, maxzoom, layer)
    target = ctx.layer(area.layer)
    clipped = check_area(target, area.area, area.minzoom, area.maxzoom)
    removed = await run_in_threadpool(truncate, ctx.cascade, target, clipped, area.minzoom)
    return {
        "layer": target.name,
        "bbox": list(clipped),
        "zooms": [area.minzoom, target.max_zoom],
        "removed": removed["tiles"],
        "blocks_removed": removed["blocks"],
        "blocks_requeued": removed["replanned"],
    }


async def truncate_request(
    request: Request,
    bbox: str | None,
    minzoom: int | None,
    maxzoom: int | None,
    layer: str | None,
) -> AreaBody:
    """The area from a JSON body, else from the query (`?bbox=W,S,E,N&minzoom=&maxzoom=`)."""
    body = await request.body()
    try:
        if body.strip():
            return AreaBody.model_validate_json(body)
        if bbox is None:
            raise InvalidRequest("give bbox=west,south,east,north, minzoom and maxzoom")
        values = [float(v) for v in bbox.split(",")]
        if maxzoom is None:
            maxzoom = minzoom
        return AreaBody.model_validate(
            {"layer": layer, "bbox": values, "minzoom": minzoom, "maxzoom": maxzoom}
        )
    except ValueError as e:
        if isinstance(e, ValidationError):
            problems = [f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in e.errors()]
            raise InvalidRequest("invalid request: " + "; ".join(problems)) from None
        raise InvalidRequest(f"bbox must be four numbers west,south,east,north: {e}") from None
