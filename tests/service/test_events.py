"""Server-Sent Events over real HTTP: a live uvicorn on 127.0.0.1 streams block-ready events."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from redis import Redis

from app.cascade import EVENTS_CHANNEL
from app.main import create_app
from tests.conftest import KAMPALA_LAYER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(make_settings):
    settings = make_settings([KAMPALA_LAYER, {**KAMPALA_LAYER, "name": "other"}])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", Redis.from_url(settings.redis_url)
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
