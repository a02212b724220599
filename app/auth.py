"""Who may spend GPU time: admin calls need the bearer token; with none set they are refused,
except from loopback under `mapcascade serve` (settings.loopback_admin). The client address is
the socket peer, or what a configured trusted proxy forwarded (uvicorn's proxy headers, see
`app.cli.serve.proxy_options`): a header from anyone else never makes anyone admin."""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Depends, Request

from app.context import Context, get_context
from app.errors import Forbidden, Unauthorized


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
