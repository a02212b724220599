"""WMTS 1.0.0 endpoints: the capabilities document, and GetTile both RESTful and KVP, answered
by the tile route's own serving code (same bytes, headers, interim tiles). Errors are OWS
ExceptionReport XML, which WMTS clients read, never the JSON of the other routes."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from app.context import Context, get_context
from app.errors import STATUS_CODES, MapcascadeError, documented
from app.routes.meta import public_base_url
from app.routes.tiles import serve_tile
from app.tiles import TileOutOfRange
from app.wmts import (
    CAPABILITIES_PATH,
    FORMAT,
    KVP_PATH,
    MEDIA_TYPE,
    VERSION,
    WmtsError,
    capabilities,
    exception_report,
    quoted,
    resolve_tile,
)

router = APIRouter(tags=["wmts"])

XML: dict[str, Any] = {"content": {MEDIA_TYPE: {}}}
PNG: dict[str, Any] = {
    "content": {"image/png": {}},
    "description": "A 256x256 PNG tile, as /tiles answers it",
}
# OWS ExceptionReport bodies; 500 stays the JSON of every route (an internal error, logged).
REPORTS: dict[int | str, dict[str, Any]] = {
    **documented(),
    304: {"description": "Not modified (If-None-Match / If-Modified-Since)"},
    400: {**XML, "description": "ExceptionReport: a missing or invalid parameter"},
    404: {**XML, "description": "ExceptionReport: no such layer, matrix or tile (RESTful)"},
    429: {**XML, "description": "ExceptionReport: too many blocks queued for this client"},
    501: {**XML, "description": "ExceptionReport: operation not supported"},
    503: {**XML, "description": "ExceptionReport: generation failed; see Retry-After"},
}
# OGC 06-121r3: parameter names are case-insensitive; these are the GetTile ones.
GET_TILE = ("LAYER", "TILEMATRIXSET", "TILEMATRIX", "TILEROW", "TILECOL", "FORMAT")


def xml_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


async def answering_ows(restful: bool, handler: Callable[[], Awaitable[Response]]) -> Response:
    """Run a WMTS handler; any error it raises becomes an ExceptionReport. Errors of the tile
    serving code (rate limit, failed generation) keep their status and Retry-After."""
    try:
        return await handler()
    except WmtsError as e:
        error, status, headers = e, e.status(restful), {}
    except (MapcascadeError, TileOutOfRange) as e:
        status = next(STATUS_CODES[c] for c in type(e).__mro__ if c in STATUS_CODES)
        message = e.message if isinstance(e, MapcascadeError) else str(e)
        error = WmtsError("NoApplicableCode", None, message)
        headers = dict(e.headers) if isinstance(e, MapcascadeError) else {}
    headers["Cache-Control"] = "no-store"  # errors are never cached
    return xml_response(exception_report(error), status, headers)


@router.get(CAPABILITIES_PATH, summary="WMTS 1.0.0 capabilities (RESTful)",
            response_class=Response, responses={**documented(), 200: XML})  # fmt: skip
async def restful_capabilities(request: Request, ctx: Context = Depends(get_context)) -> Response:
    """Every layer, its GoogleMapsCompatible tile matrix set cut to its zooms and bounds, and
    the RESTful and KVP ways to its tiles. Query parameters are ignored (clients such as OWSLib
    append `SERVICE=WMTS&REQUEST=GetCapabilities`)."""
    return capabilities_response(request, ctx)


def capabilities_response(request: Request, ctx: Context) -> Response:
    return xml_response(capabilities(ctx.settings.layers.values(), public_base_url(request, ctx)))


@router.get(
    "/wmts/1.0.0/{layer}/{style}/{matrix_set}/{matrix}/{row}/{col}.{ext}",
    summary="WMTS tile (RESTful)",
    response_class=Response,
    responses={**{k: v for k, v in REPORTS.items() if k != 501}, 200: PNG},
)
async def restful_tile(request: Request, layer: str, style: str, matrix_set: str, matrix: str,
                       row: str, col: str, ext: str,
                       ctx: Context = Depends(get_context)) -> Response:  # fmt: skip
    """The ResourceURL template of the capabilities: `{TileMatrix}` is the zoom, `{TileRow}`
    the XYZ y, `{TileCol}` the x. `?wait=s` as on /tiles."""

    async def handle() -> Response:
        fmt = FORMAT if ext == "png" else f".{ext}"
        tile = resolve_tile(ctx.settings.layers, layer, style, matrix_set, matrix, row, col, fmt)
        wait = parse_wait(request.query_params.get("wait"))
        return await serve_tile(request, ctx, tile.layer, tile.z, tile.x, tile.y, "png", wait)

    return await answering_ows(True, handle)


@router.get(KVP_PATH, summary="WMTS KVP: GetCapabilities and GetTile", response_class=Response,
            responses={**{k: v for k, v in REPORTS.items() if k != 404},
                       200: {"content": {"image/png": {}, MEDIA_TYPE: {}},
                             "description": "A tile, or the capabilities"}})  # fmt: skip
async def kvp(request: Request, ctx: Context = Depends(get_context)) -> Response:
    """`?SERVICE=WMTS&REQUEST=GetCapabilities`, or `?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0
    &LAYER=..&STYLE=default&FORMAT=image/png&TILEMATRIXSET=..&TILEMATRIX=z&TILEROW=y&TILECOL=x`
    (names in any case; `WAIT=s` as `?wait=` on /tiles)."""

    async def handle() -> Response:
        params = kvp_params(request)
        service = params.get("SERVICE")
        if service is None:
            raise WmtsError("MissingParameterValue", "SERVICE", "SERVICE=WMTS is missing")
        if service.upper() != "WMTS":
            raise WmtsError(
                "InvalidParameterValue",
                "SERVICE",
                f"SERVICE {quoted(service)} is not served here: this is WMTS",
            )
        operation = params.get("REQUEST")
        if operation is None:
            raise WmtsError("MissingParameterValue", "REQUEST",
                            "REQUEST is missing: GetCapabilities or GetTile")  # fmt: skip
        if operation.lower() == "getcapabilities":
            accepted = params.get("ACCEPTVERSIONS")
            if accepted is not None and VERSION not in accepted.split(","):
                raise WmtsError(
                    "VersionNegotiationFailed",
                    "ACCEPTVERSIONS",
                    f"only WMTS {VERSION} is served, not {quoted(accepted)}",
                )
            return capabilities_response(request, ctx)
        if operation.lower() != "gettile":
            raise WmtsError("OperationNotSupported", "REQUEST",
                            f"REQUEST {quoted(operation)} is not supported: "
                            "GetCapabilities or GetTile")  # fmt: skip
        version = params.get("VERSION")
        if version is not None and version != VERSION:
            raise WmtsError(
                "InvalidParameterValue",
                "VERSION",
                f"VERSION {quoted(version)} is not served: only {VERSION}",
            )
        for name in GET_TILE:
            if not params.get(name):
                raise WmtsError("MissingParameterValue", name, f"GetTile needs {name}")
        tile = resolve_tile(ctx.settings.layers, params["LAYER"], params.get("STYLE"),
                            params["TILEMATRIXSET"], params["TILEMATRIX"], params["TILEROW"],
                            params["TILECOL"], params["FORMAT"])  # fmt: skip
        wait = parse_wait(params.get("WAIT"))
        return await serve_tile(request, ctx, tile.layer, tile.z, tile.x, tile.y, "png", wait)

    return await answering_ows(False, handle)


def kvp_params(request: Request) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        key = name.upper()
        if key in params:
            raise WmtsError("InvalidParameterValue", key[:32], f"{key[:32]} is given twice")
        params[key] = value
    return params


def parse_wait(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise WmtsError(
            "InvalidParameterValue", "WAIT", f"wait {quoted(value)} is not a number of seconds >= 0"
        )
    return seconds
