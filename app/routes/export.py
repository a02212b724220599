"""Export endpoints (admin): POST /export writes an area's stored tiles to an MBTiles or PMTiles
file in a thread of this API process, GET /export/{id} tells its progress, GET
/export/{id}/file downloads it. Job records live in Redis, so any API process answers them."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from redis import Redis

from app.auth import require_admin
from app.context import Context, get_context
from app.errors import NotFound, TooManyPending, documented
from app.export import (
    ExportFailed,
    ExportPlan,
    Format,
    Inventory,
    export_area,
    plan_export,
    take_inventory,
)
from app.routes.meta import public_base_url
from app.routes.params import AreaBody
from app.seeding.progress import text
from app.settings import Settings
from app.store import TileStore

log = logging.getLogger(__name__)

RECORD_TTL = 7 * 86400  # seconds a finished export's record is kept (its file stays)
PROGRESS_EVERY = 0.5  # seconds between progress writes to Redis
# A running export whose record was not updated for this long lost its API process.
STALE_AFTER = 600
MEDIA_TYPES = {"mbtiles": "application/vnd.sqlite3", "pmtiles": "application/vnd.pmtiles"}


class ExportRequest(AreaBody):
    format: Literal["mbtiles", "pmtiles"] = "mbtiles"


def record_key(export_id: str) -> str:
    return f"mapcascade:export:{export_id}"


class Exports:
    """Export jobs of one API process: at most `max_concurrent_exports` threads at once."""

    def __init__(self, redis: Redis, store: TileStore, settings: Settings):
        self.redis = redis
        self.store = store
        self.settings = settings
        self.folder = settings.data_dir / "exports"
        self.stop_event = threading.Event()
        self.threads: dict[str, threading.Thread] = {}
        self._guard = threading.Lock()

    def path(self, export_id: str, fmt: str) -> Path:
        return self.folder / f"{export_id}.{fmt}"

    def start(self, plan: ExportPlan, fmt: Format) -> dict[str, str]:
        """Start an export; its record as created (the thread may be ahead of it already)."""
        inventory = take_inventory(self.store, plan)  # an empty area is refused now, not later
        with self._guard:
            self.threads = {i: t for i, t in self.threads.items() if t.is_alive()}
            running = list(self.threads.values())
            limit = self.settings.max_concurrent_exports
            if len(running) >= limit:
                raise TooManyPending(
                    f"{len(running)} exports are running, the limit is {limit} "
                    "(MAPCASCADE_MAX_CONCURRENT_EXPORTS): try again when one is done",
                    retry_after=10,
                )
            export_id = secrets.token_hex(8)
            now = repr(time.time())
            record = {
                "id": export_id, "state": "running", "layer": plan.layer.name,
                "bbox": ",".join(map(repr, plan.bbox)), "minzoom": plan.minzoom,
                "maxzoom": plan.maxzoom, "format": fmt, "total": len(inventory.found),
                "done": 0, "missing": inventory.missing, "created_at": now, "updated_at": now,
            }  # fmt: skip
            self.redis.hset(record_key(export_id), mapping=record)  # type: ignore[arg-type]
            self.redis.expire(record_key(export_id), RECORD_TTL)
            thread = threading.Thread(
                target=self._run, args=(export_id, plan, fmt, inventory), daemon=True,
                name=f"export-{export_id}",
            )  # fmt: skip
            self.threads[export_id] = thread
            thread.start()
        return {k: str(v) for k, v in record.items()}

    def _run(self, export_id: str, plan: ExportPlan, fmt: Format, inventory: Inventory) -> None:
        key = record_key(export_id)
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            if self.stop_event.is_set():
                raise ExportFailed("the API process is stopping")
            now = time.time()
            if now - last >= PROGRESS_EVERY or done == total:
                self.redis.hset(key, mapping={"done": done, "updated_at": repr(now)})
                last = now

        try:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ExportFailed(f"cannot create the exports folder: {e.strerror}") from None
            result = export_area(
                self.store, plan, self.path(export_id, fmt), fmt, inventory=inventory,
                progress=progress,
            )  # fmt: skip
            final: dict[str, str | int] = {
                "state": "done", "tiles": result.tiles, "bytes": result.bytes,
                "missing": result.missing,
            }  # fmt: skip
        except ExportFailed as e:
            final = {"state": "failed", "error": str(e)}
        except Exception:
            log.exception("export %s failed", export_id)
            final = {"state": "failed", "error": "internal error; it has been logged"}
        now = repr(time.time())
        self.redis.hset(key, mapping={**final, "finished_at": now, "updated_at": now})  # type: ignore[dict-item]
        log.info("export %s of %s: %s", export_id, plan.layer.name, final)

    def record(self, export_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(record_key(export_id))
        if not raw:
            raise NotFound(f"no export {export_id!r}")
        rec = {text(k): text(v) for k, v in raw.items()}
        if rec["state"] == "running" and time.time() - float(rec["updated_at"]) > STALE_AFTER:
            rec["state"], rec["error"] = "failed", "the API process running it stopped"
        return rec

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for thread in list(self.threads.values()):
            thread.join(timeout)


def describe(rec: dict[str, str], base: str) -> dict:
    done, total = int(rec["done"]), int(rec["total"])
    elapsed = float(rec.get("finished_at", rec["updated_at"])) - float(rec["created_at"])
    eta = None
    if rec["state"] == "running" and done:
        eta = round(elapsed / done * (total - done), 1)
    body: dict = {
        "id": rec["id"],
        "state": rec["state"],
        "layer": rec["layer"],
        "bbox": [float(v) for v in rec["bbox"].split(",")],
        "minzoom": int(rec["minzoom"]),
        "maxzoom": int(rec["maxzoom"]),
        "format": rec["format"],
        "tiles": {"done": done, "total": total, "missing": int(rec["missing"])},
        "progress": round(done / total, 4) if total else 1.0,
        "eta_s": eta,
        "elapsed_s": round(elapsed, 1),
        "status_url": f"{base}/export/{rec['id']}",
    }
    if rec["state"] == "done":
        body["bytes"] = int(rec["bytes"])
        body["download_url"] = f"{base}/export/{rec['id']}/file"
    if "error" in rec:
        body["error"] = rec["error"]
    return body


def exports_of(app: FastAPI) -> Exports:
    exports = getattr(app.state, "exports", None)
    if exports is None:
        ctx: Context = app.state.context
        exports = app.state.exports = Exports(ctx.redis, ctx.store, ctx.settings)
    return exports


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # A running export is abandoned cleanly (its temp file removed) when the process stops.
    await run_in_threadpool(exports_of(app).stop)


router = APIRouter(
    tags=["export"],
    lifespan=lifespan,
    dependencies=[Depends(require_admin)],
    responses=documented(401, 403, 404, 422, 429),
)
Ctx = Annotated[Context, Depends(get_context)]


def get_exports(request: Request) -> Exports:
    return exports_of(request.app)


Jobs = Annotated[Exports, Depends(get_exports)]


@router.post("/export", status_code=202, summary="Export an area to MBTiles or PMTiles (admin)")
async def create_export(
    body: ExportRequest, request: Request, response: Response, ctx: Ctx, exports: Jobs
) -> dict:
    layer = ctx.layer(body.layer)
    limit = ctx.settings.max_export_tiles
    plan = plan_export(layer, body.area, body.minzoom, body.maxzoom, limit)
    rec = await run_in_threadpool(exports.start, plan, body.format)
    status = describe(rec, public_base_url(request, ctx))
    response.headers["Location"] = status["status_url"]
    return status


@router.get("/export/{export_id}", summary="An export's state and progress (admin)")
async def export_status(
    export_id: str, request: Request, response: Response, ctx: Ctx, exports: Jobs
) -> dict:
    rec = await run_in_threadpool(exports.record, export_id)
    response.headers["Cache-Control"] = "no-store"
    return describe(rec, public_base_url(request, ctx))


@router.get(
    "/export/{export_id}/file",
    summary="Download a finished export (admin)",
    response_class=FileResponse,
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}},
)
async def export_file(export_id: str, exports: Jobs) -> FileResponse:
    rec = await run_in_threadpool(exports.record, export_id)
    path = exports.path(rec["id"], rec["format"])
    if rec["state"] != "done" or not path.is_file():
        raise NotFound(f"export {export_id} is {rec['state']}: there is no file to download")
    name = f"{rec['layer']}-z{rec['minzoom']}-{rec['maxzoom']}.{rec['format']}"
    return FileResponse(
        path, media_type=MEDIA_TYPES[rec["format"]], filename=name,
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip
