"""Who may spend GPU time: admin calls need the bearer token; with none set they are refused,
except from loopback under `mapcascade serve` (settings.loopback_admin). The client address is
the socket peer, or what a configured trusted proxy forwarded (uvicorn's proxy headers, see
`app.cli.serve.server_options`): a header from anyone else never makes anyone admin."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Depends, Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.context import Context, get_context
from app.errors import Forbidden, Unauthorized, error_response


def has_admin_token(request: Request, ctx: Context) -> bool:
    token = ctx.settings.admin_token
    given = request.headers.get("authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def is_loopback(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def require_admin(request: Request, ctx: Context = Depends(get_context)) -> None:
    if ctx.settings.admin_token:
        if not has_admin_token(request, ctx):
            raise Unauthorized("this call needs 'Authorization: Bearer <MAPCASCADE_ADMIN_TOKEN>'")
    elif not ctx.settings.loopback_admin:
        raise Forbidden("no MAPCASCADE_ADMIN_TOKEN is set, so admin calls are refused")
    elif not is_loopback(request):
        raise Forbidden(
            "no MAPCASCADE_ADMIN_TOKEN is set, so admin calls are accepted from loopback only"
        )


def is_trusted_proxy(request: Request, ctx: Context) -> bool:
    """The socket peer is a configured reverse proxy, so its X-Forwarded-* headers count."""
    return request.client is not None and request.client.host in ctx.settings.trusted_proxies


class HostCheck:
    """Answer only requests whose Host is ours (MAPCASCADE_ALLOWED_HOSTS): a page on another
    domain rebinding its name to 127.0.0.1 must not reach the loopback admin calls, and a
    forged Host must not end up in the URLs of TileJSON."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            host = Headers(scope=scope).get("host", "").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed:
                refused = error_response(400, f"host {host[:100]!r} is not served here "
                                         "(MAPCASCADE_ALLOWED_HOSTS)")  # fmt: skip
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)
