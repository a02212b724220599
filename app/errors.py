"""Domain errors and the one table that maps them to HTTP status codes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.tiles import TileOutOfRange


class MapcascadeError(Exception):
    """Base of errors a client can be told about."""

    headers: dict[str, str] = {}

    def __init__(self, message: str, **detail: object):
        super().__init__(message)
        self.message = message
        self.detail = detail


class UnknownLayer(MapcascadeError):
    pass


class OutsideLayer(MapcascadeError):
    """A zoom or area the layer does not cover: never generated, so 404."""


class UnsupportedFormat(MapcascadeError):
    pass


class RetryLater(MapcascadeError):
    """A transient refusal: the client is told when to ask again."""

    def __init__(self, message: str, retry_after: int, **detail: object):
        super().__init__(message, **detail)
        self.headers = {"Retry-After": str(retry_after)}


class GenerationFailed(RetryLater):
    pass


class TooManyPending(RetryLater):
    pass


class Unavailable(RetryLater):
    """A shared resource is exhausted or down (event viewers, Redis)."""


class StoreUnavailable(Unavailable):
    """The tile store did not answer (an S3 outage, a timeout): tell the client to come back."""

    def __init__(self, message: str, retry_after: int = 10, **detail: object):
        super().__init__(message, retry_after, **detail)


class Unauthorized(MapcascadeError):
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(MapcascadeError):
    pass


class InvalidRequest(MapcascadeError):
    """A well-formed request asking for something impossible (bad bbox, zooms, too large)."""


class NotFound(MapcascadeError):
    pass


STATUS_CODES: dict[type[Exception], int] = {
    TileOutOfRange: 404,
    UnknownLayer: 404,
    OutsideLayer: 404,
    NotFound: 404,
    UnsupportedFormat: 415,
    Unauthorized: 401,
    Forbidden: 403,
    InvalidRequest: 422,
    TooManyPending: 429,
    GenerationFailed: 503,
    Unavailable: 503,
    StoreUnavailable: 503,
}


class ErrorBody(BaseModel):
    """Every error answers this JSON (plus details of the error, e.g. `retry_after`)."""

    model_config = ConfigDict(extra="allow")
    error: str
    status: int


ERROR_MEANINGS = {
    400: "Host not served here (MAPCASCADE_ALLOWED_HOSTS)",
    401: "Admin call without the bearer token",
    403: "Admin call refused (no token configured, or not from loopback)",
    404: "No such tile, layer or seed; or outside the layer",
    415: "Unknown tile format (tiles are .png)",
    422: "Malformed or impossible request",
    429: "Too many blocks queued for this client",
    500: "Internal error (logged, no details given)",
    503: "Generation failed, a resource is exhausted or the tile store is down; see Retry-After",
}


def documented(*statuses: int) -> dict[int | str, dict]:
    """The OpenAPI `responses` of these error statuses (400 and 500 can come from anywhere)."""
    return {s: {"model": ErrorBody, "description": ERROR_MEANINGS[s]}
            for s in sorted({400, 500, *statuses})}  # fmt: skip


def error_response(
    status: int, message: str, headers: dict | None = None, **detail
) -> JSONResponse:
    # Errors are never cached: a 404 today may be a tile tomorrow, a 503 is transient.
    return JSONResponse(
        {"error": message, "status": status, **detail},
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def add_exception_handlers(app: FastAPI) -> None:
    for exc_class, status in STATUS_CODES.items():

        async def handler(request: Request, exc: Exception, status: int = status) -> JSONResponse:
            if isinstance(exc, MapcascadeError):
                return error_response(status, exc.message, exc.headers, **exc.detail)
            return error_response(status, str(exc))

        app.add_exception_handler(exc_class, handler)

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        ]
        return error_response(422, "invalid request: " + "; ".join(problems), problems=problems)

    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log (uvicorn prints it); the client learns nothing inside.
        return error_response(500, "internal error; it has been logged")

    app.add_exception_handler(Exception, internal)
    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
