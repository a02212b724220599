"""Admin access that headers cannot fake: without a token, admin calls are refused everywhere but
`mapcascade serve`'s loopback, and a forwarded header from an untrusted peer is never believed."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from app.cli.serve import server_options
from app.main import create_app
from tests.service.test_seed import FULL, LOOPBACK, SEED_LAYER

SPOOFED = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}


def test_without_a_token_the_api_refuses_admin_even_from_loopback(make_settings) -> None:
    settings = make_settings([SEED_LAYER], loopback_admin=False)  # `mapcascade api`
    with TestClient(create_app(settings), client=LOOPBACK) as local:
        r = local.request("DELETE", "/tiles", json=FULL)
        assert r.status_code == 403 and "refused" in r.json()["error"]
        assert local.post("/seed", json=FULL).status_code == 403


def test_uvicorn_believes_forwarded_headers_from_trusted_proxies_only(make_settings) -> None:
    plain = server_options(make_settings())
    assert plain["proxy_headers"] is False and plain["forwarded_allow_ips"] is None
    trusted = server_options(make_settings(trusted_proxies=["10.0.0.2", "10.0.0.3"]))
    assert trusted["proxy_headers"] is True
    assert trusted["forwarded_allow_ips"] == "10.0.0.2,10.0.0.3"


@pytest.mark.slow
def test_a_forwarded_loopback_address_does_not_make_a_client_admin(live_api: str) -> None:
    for headers in ({}, SPOOFED):
        r = httpx.request("DELETE", live_api + "/tiles", json=FULL, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert httpx.post(live_api + "/seed", json=FULL, headers=headers).status_code == 403
