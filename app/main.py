"""The app factory: settings -> context -> routers, middlewares and error handlers."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.auth import HostCheck
from app.context import Context
from app.errors import add_exception_handlers
from app.metrics import RequestMetricsMiddleware
from app.routes import events, export, meta, seed, tiles, wmts
from app.settings import Settings

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    context = Context.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await context.events.close()
        context.redis.close()

    app = FastAPI(
        title="mapcascade",
        version=__version__,
        description="Generative XYZ map tiles from remote-sensing imagery.",
        lifespan=lifespan,
    )
    app.state.context = context
    routers = (tiles.router, meta.router, events.router, seed.router, export.router, wmts.router)
    for router in routers:
        app.include_router(router)
    add_exception_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "HEAD"],
        expose_headers=["ETag", "Last-Modified", "X-Cache", "X-Tile-Status", "Retry-After"],
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=context.metrics)
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    mount_pages(app)
    for router in (app.router, *routers):
        for route in router.routes:  # HEAD wherever GET is: monitors and caches probe with it
            methods = route.methods if isinstance(route, APIRoute) else None
            if methods and "GET" in methods:
                methods.add("HEAD")
    return app


def mount_pages(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def leaflet() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/openlayers", include_in_schema=False)
    async def openlayers() -> FileResponse:
        return FileResponse(STATIC_DIR / "openlayers.html")

    @app.get("/maplibre", include_in_schema=False)
    async def maplibre() -> FileResponse:
        return FileResponse(STATIC_DIR / "maplibre.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
