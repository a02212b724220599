"""Fuzzing a live `mapcascade api` from its own OpenAPI document (schemathesis), plus a list of
hand-picked nasty requests: no 5xx, every error a JSON body, every status documented."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

EXAMPLES = 500  # per operation: about 10,000 requests over the 30 operations
# ST202 (a schema-valid request must not get 4xx) cannot hold for tile URLs: `{y}.{fmt}` is one
# path segment, so a generated y such as "1.0" reaches the app as y=1, fmt="0".
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


def check(case, response) -> None:
    excluded = list(EXCLUDED)
    if case.path == "/ready":  # 503 is its documented answer while no worker runs
        excluded.append(schemathesis.checks.not_a_server_error)
    # No 5xx; status, content type and body as the document says.
    case.validate_response(response, excluded_checks=excluded)
    if response.status_code >= 400 and case.method != "HEAD":
        # WMTS clients read OWS ExceptionReport XML (docs/clients.md); every other error is JSON.
        wmts = case.path.startswith("/wmts") and response.status_code != 500
        expected = "application/xml" if wmts else "application/json"
        assert response.headers["content-type"][0].startswith(expected), response.text


def test_the_api_answers_what_its_openapi_document_says(live_api: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api}/openapi.json")
    failures, calls = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label == "GET /events":  # a stream that never ends: tests/service/test_events
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def fuzz(case) -> None:
            nonlocal calls
            calls += 1
            check(case, case.call(timeout=30))

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as e:  # every operation's failures, then report
            failures.append(f"{operation.label}: {e}")
    print(f"\nschemathesis: {calls} requests")
    assert not failures, "\n\n".join(failures)


NASTY_PATHS = [
    "/tiles/19/309606/261636.png/../../../../etc/passwd",
    "/tiles/%2e%2e/%2e%2e/etc/passwd.png",
    "/tiles/kampala/19/309606/261636.png%00.jpg",
    "/tiles/19/309606/261636",
    "/tiles/19/309606/261636.PNG",
    "/tiles/19/309606/-0.png",
    "/tiles/19/309606/1e3.png",
    "/tiles/19/309606/0x1f.png",
    "/tiles/19/309606/١٢.png",  # Arabic-Indic digits: int() would accept them
    "/tiles/" + "9" * 10000 + "/0/0.png",
    "/tiles/../../layers",
    "/seed/" + "a" * 5000,
    "/seed/%ff%fe",
    "/imagery/%00/19/0/0.png",
    "/kampala%2f..%2f/tiles.json",
    "/events?layer=" + "x" * 5000,
    "/tiles/19/309606/261636.png?wait=1e309",
    "/tiles/19/309606/261636.png?wait=nan",
    "/tiles/19/309606/261636.png?wait=-0",
]
NASTY_HEADERS = [
    {"If-Modified-Since": "Mon, 99 Foo 99999 99:99:99 GMT"},
    {"If-Modified-Since": "0" * 1000},
    {"If-None-Match": '"' + "x" * 8000 + '"'},
    {"Authorization": "Bearer " + "\u00e9" * 100},
    {"Authorization": "Basic Og=="},
    {"X-Forwarded-For": "127.0.0.1, ::1, " + "1." * 2000},
    {"X-Forwarded-Host": "evil.example\r\nSet-Cookie: x=1"},
    {"Range": "bytes=999999999-"},
    {"Accept": "*/*;q=" + "9" * 100},
]
NASTY_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{",
    b'{"layer": "seedarea", "bbox": [1e309, 0, 1, 1], "minzoom": 19, "maxzoom": 21}',
    b'{"layer": "seedarea", "bbox": ["a", "b", "c", "d"], "minzoom": 19, "maxzoom": 21}',
    b'{"layer": "seedarea", "bbox": [32.58, 0.34, 32.59, 0.35], "minzoom": -1, "maxzoom": 99}',
    b'{"layer": {"$gt": ""}}',
    b"\xff\xfe\x00\x00",
    b'{"a": ' * 5000 + b"1" + b"}" * 5000,
    b"x" * 2_000_000,
]


def test_nasty_requests_get_json_errors_never_a_5xx(live_api: str) -> None:
    requests = [("GET", path, {}, None) for path in NASTY_PATHS]
    requests += [("GET", "/tiles/19/309606/261636.png", h, None) for h in NASTY_HEADERS]
    requests += [("GET", "/seed", h, None) for h in NASTY_HEADERS]
    for method, path in (("POST", "/seed"), ("DELETE", "/tiles")):
        requests += [(method, path, {"Content-Type": "application/json"}, b) for b in NASTY_BODIES]
    with httpx.Client(base_url=live_api, timeout=30) as client:
        for method, path, headers, body in requests:
            try:
                r = client.request(method, path, headers=headers, content=body)
            except (httpx.LocalProtocolError, UnicodeEncodeError):
                continue  # httpx itself refuses to send it (CR/LF or non-ASCII in a header)
            where = f"{method} {path[:80]} {str(headers)[:80]}"
            assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:200]}"
            if r.status_code >= 400:
                assert r.headers["content-type"].startswith("application/json"), where
                assert "Traceback" not in r.text and str(ROOT) not in r.text, where
