"""The app factory: settings -> context -> routers, middlewares and error handlers."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from string import Template

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from app import __version__
from app.auth import HostCheck
from app.context import Context
from app.errors import add_exception_handlers
from app.metrics import RequestMetricsMiddleware
from app.routes import events, export, meta, seed, tiles, wmts
from app.settings import CORS_EXPOSED_HEADERS, Settings

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The viewer pages, all from static/viewer.html: route -> (name, vendored library, own script).
VIEWERS = {
    "/": ("Leaflet", "leaflet/leaflet", "leaflet-map"),
    "/openlayers": ("OpenLayers", "ol/ol", "openlayers-map"),
    "/maplibre": ("MapLibre GL", "maplibre-gl/maplibre-gl", "maplibre-map"),
}


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
        expose_headers=list(CORS_EXPOSED_HEADERS),
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


def viewer_pages() -> dict[str, str]:
    """Each viewer's page, linked to the other viewers by relative URLs."""
    template = Template((STATIC_DIR / "viewer.html").read_text())
    pages = {}
    for route, (name, library, script) in VIEWERS.items():
        links = "\n    ".join(
            f'<a href="{other.lstrip("/") or "./"}">{other_name}</a>'
            for other, (other_name, _, _) in VIEWERS.items()
            if other != route
        )
        pages[route] = template.substitute(name=name, library=library, script=script, links=links)
    return pages


def page_handler(page: str):  # noqa: ANN201 - a route endpoint
    # A closure, not a default argument: FastAPI would read a default as a query parameter.
    async def viewer() -> HTMLResponse:
        return HTMLResponse(page)

    return viewer


def mount_pages(app: FastAPI) -> None:
    for route, page in viewer_pages().items():
        app.add_api_route(route, page_handler(page), methods=["GET"], include_in_schema=False)

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
