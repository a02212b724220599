"""Server-Sent Events over real HTTP: a live uvicorn on 127.0.0.1 streams block-ready events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from redis import Redis

from app.blockjob import EVENTS_CHANNEL
from app.main import create_app
from tests.browser.live_service import free_port
from tests.conftest import KAMPALA_LAYER


@pytest.fixture
def live_server(make_settings):
    settings = make_settings([KAMPALA_LAYER, {**KAMPALA_LAYER, "name": "other"}])
    with serving(settings) as base:
        yield base, Redis.from_url(settings.redis_url)


@contextmanager
def serving(settings):
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def read_events(url: str, redis: Redis, messages: list[dict], expect: int) -> list[dict]:
    events: list[dict] = []
    with httpx.stream("GET", url, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-store"
        lines = r.iter_lines()
        assert next(lines).startswith("retry:")  # subscribed: now publish
        for message in messages:
            redis.publish(EVENTS_CHANNEL, json.dumps(message))
        kind = None
        for line in lines:
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "block":
                events.append(json.loads(line.split(":", 1)[1]))
                if len(events) == expect:
                    break
    return events


def block_event(layer: str) -> dict:
    tiles = [[19, 309606, 261636], [19, 309607, 261636], [19, 309606, 261637], [19, 309607, 261637]]
    return {"layer": layer, "block": [18, 154803, 130818], "tiles": tiles}


def test_events_stream_block_ready_messages(live_server):
    base, redis = live_server
    events = read_events(f"{base}/events", redis, [block_event("kampala")], expect=1)
    assert events == [block_event("kampala")]


def test_events_filter_by_layer(live_server):
    base, redis = live_server
    sent = [block_event("other"), block_event("kampala")]
    events = read_events(f"{base}/events?layer=kampala", redis, sent, expect=1)
    assert events == [block_event("kampala")]


def test_events_unknown_layer_is_404(live_server):
    base, _ = live_server
    r = httpx.get(f"{base}/events?layer=nope", timeout=5)
    assert r.status_code == 404 and "unknown layer" in r.json()["error"]


Viewer = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_viewer(port: int) -> Viewer:
    """A bare SSE client (a thousand httpx clients would cost more than the server)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b": connected"), 60)
    return reader, writer  # the writer too: a collected writer closes the connection


async def next_block(viewer: Viewer) -> dict:
    reader, writer = viewer
    while True:
        line = (await reader.readline()).decode().strip()
        if line.startswith("data:"):
            writer.close()
            return json.loads(line.split(":", 1)[1])


def test_a_thousand_viewers_share_one_subscription_and_all_get_the_event(live_server):
    base, redis = live_server
    port = int(base.rsplit(":", 1)[1])
    viewers = 1000

    async def run() -> list[dict]:
        opened = await asyncio.gather(*(open_viewer(port) for _ in range(viewers)))
        # One Redis subscription for the whole process, not one per viewer.
        subscribers = [c for c in redis.client_list() if int(c.get("sub", 0)) > 0]
        assert len(subscribers) == 1
        redis.publish(EVENTS_CHANNEL, json.dumps(block_event("kampala")))
        return await asyncio.wait_for(asyncio.gather(*(next_block(v) for v in opened)), 60)

    events = asyncio.run(run())
    assert len(events) == viewers and all(e == block_event("kampala") for e in events)


def test_viewers_beyond_the_maximum_get_a_503_and_a_freed_slot_is_reused(make_settings):
    settings = make_settings([KAMPALA_LAYER], max_event_viewers=2)
    with serving(settings) as base:
        with (
            httpx.stream("GET", f"{base}/events", timeout=10) as first,
            httpx.stream("GET", f"{base}/events", timeout=10) as second,
        ):
            assert first.status_code == second.status_code == 200
            refused = httpx.get(f"{base}/events", timeout=10)
            assert refused.status_code == 503
            assert "2 viewers at most" in refused.json()["error"]
            assert int(refused.headers["retry-after"]) > 0
        # Both closed: their slots come back once the server notices (next write at the latest).
        deadline = time.monotonic() + 20
        while True:
            with httpx.stream("GET", f"{base}/events", timeout=10) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "closed viewers never freed their slots"
            time.sleep(0.2)
