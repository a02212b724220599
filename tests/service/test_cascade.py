"""The lazy quadtree end to end: real Redis, real worker processes, the tiny random model."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image
from redis import Redis
from rq.registry import StartedJobRegistry

from app.blockjob import EVENTS_CHANNEL
from app.main import create_app
from app.store import FileTileStore
from app.tiles import Block, Tile, ancestor_of
from tests.conftest import KAMPALA, KAMPALA_LAYER

pytestmark = pytest.mark.slow

ROOT_BLOCK = Block("kampala", 18, 154803, 130818)  # see KAMPALA_LAYER


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def asgi_client(settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://testserver"
    )


def test_concurrent_requests_for_one_block_generate_it_once(make_settings, workers):
    settings = make_settings([KAMPALA_LAYER], max_outstanding_per_client=100)
    redis = Redis.from_url(settings.redis_url)
    workers.start(settings)
    workers.start(settings)  # two workers, so a duplicate job would really run twice
    workers.wait_ready(redis, 2)
    urls = [f"/tiles/{t.z}/{t.x}/{t.y}.png?wait=60" for t in ROOT_BLOCK.children]

    async def fetch_all():
        async with asgi_client(settings) as client:
            responses = await asyncio.gather(*(client.get(urls[i % 4]) for i in range(50)))
            return responses, (await client.get("/metrics")).text

    responses, metrics = asyncio.run(fetch_all())
    assert Counter(r.status_code for r in responses) == {200: 50}
    assert all(r.headers["x-tile-status"] == "final" for r in responses)
    # The same URL always gives the same bytes, and they are real 256x256 PNGs.
    for k in range(4):
        bodies = {r.content for i, r in enumerate(responses) if i % 4 == k}
        assert len(bodies) == 1
        assert Image.open(io.BytesIO(bodies.pop())).size == (256, 256)
    generations = metric(metrics, "mapcascade_generated_blocks_total")
    print(f"\nconcurrency test: 50 requests -> {generations:.0f} generation(s)")
    assert generations == 1


def test_deep_miss_generates_the_chain_from_the_root_in_order(make_settings, workers):
    settings = make_settings([KAMPALA_LAYER])
    redis = Redis.from_url(settings.redis_url)
    pubsub = redis.pubsub()
    pubsub.subscribe(EVENTS_CHANNEL)
    workers.start(settings)
    workers.wait_ready(redis, 1)
    tile = Tile(309606 * 8, 261636 * 8, 22)  # root 19 + 3, under the root block's first child
    assert ancestor_of(tile, 18) == ROOT_BLOCK.parent

    async def fetch():
        async with asgi_client(settings) as client:
            start = time.monotonic()
            r = await client.get(f"/tiles/22/{tile.x}/{tile.y}.png?wait=120")
            return r, time.monotonic() - start, (await client.get("/metrics")).text

    r, elapsed, metrics = asyncio.run(fetch())
    print(f"\nroot+3 tile: first request to final tile {elapsed:.2f}s")
    assert r.status_code == 200 and r.headers["x-tile-status"] == "final"
    assert metric(metrics, "mapcascade_generated_blocks_total") == 4

    store = FileTileStore(settings.tiles_dir)
    chain = [Block.of("kampala", ancestor_of(tile, z)) for z in (19, 20, 21, 22)]
    metas = [store.block_meta(b) for b in chain]
    assert all(m is not None for m in metas)
    print("block generation seconds, root first:", [m["duration_s"] for m in metas])
    # The root block has no reference; then 2X (parent) once; then 4X (grandparent quadrant).
    assert [m["reference_span"] for m in metas] == [0, 2, 4, 4]
    assert metas[0]["reference_tiles"] == []
    assert all(m["context_margin"] == 64 for m in metas)  # the layer default

    def zxy(t: Tile) -> list[int]:
        return [t.z, t.x, t.y]

    def ancestor_and_neighbours(tiles: list[list[int]], ancestor: Tile) -> bool:
        """The ancestor first, then the stored neighbours its context margin was cut from."""
        z, x, y = zxy(ancestor)
        near = all(t[0] == z and abs(t[1] - x) <= 1 and abs(t[2] - y) <= 1 for t in tiles)
        return tiles[0] == [z, x, y] and near and len(tiles) == len({tuple(t) for t in tiles})

    assert ancestor_and_neighbours(metas[1]["reference_tiles"], ancestor_of(tile, 19))  # 2X
    assert ancestor_and_neighbours(metas[2]["reference_tiles"], ancestor_of(tile, 19))  # 4X
    assert ancestor_and_neighbours(metas[3]["reference_tiles"], ancestor_of(tile, 20))
    # The root block's four tiles are all stored, so the 2X reference had its neighbour.
    assert len(metas[1]["reference_tiles"]) > 1
    times = [m["generated_at"] for m in metas]
    assert times == sorted(times)
    assert metas[3]["overzoom"] == 1  # the fixture's deepest imagery is z21
    # Every block announced itself on the events channel, root first.
    announced = []
    deadline = time.monotonic() + 5
    while len(announced) < 4 and time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message:
            announced.append(tuple(json.loads(message["data"])["block"]))
    assert announced == [(b.z, b.x, b.y) for b in chain]


def test_killed_worker_leaves_no_partial_tile_and_block_completes(make_settings, workers):
    # 400 steps of the tiny model (~10 s here): a generation long enough to kill in the middle.
    slow = {**KAMPALA_LAYER, "steps": 400}
    settings = make_settings([slow])
    redis = Redis.from_url(settings.redis_url)
    first = workers.start(settings)
    workers.wait_ready(redis, 1)
    store = FileTileStore(settings.tiles_dir)

    async def request(wait: float):
        async with asgi_client(settings) as client:
            return await client.get(f"/tiles/19/309606/261636.png?wait={wait}")

    assert asyncio.run(request(0)).headers["x-tile-status"] == "pending"
    started = StartedJobRegistry("mapcascade", connection=redis)
    deadline = time.monotonic() + 60
    while started.count == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.count == 1
    time.sleep(1.0)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    layer_dir = settings.tiles_dir / "kampala"
    assert not any(p.is_file() for p in layer_dir.rglob("*")) if layer_dir.exists() else True

    workers.start(settings)  # a restarted worker picks the block up at once
    deadline = time.monotonic() + 300  # a loaded 2-core machine can take minutes for 400 steps
    r = asyncio.run(request(60))
    while r.headers["x-tile-status"] != "final" and time.monotonic() < deadline:
        r = asyncio.run(request(60))
    assert r.status_code == 200 and r.headers["x-tile-status"] == "final"
    assert store.has_block(ROOT_BLOCK)
    for child in ROOT_BLOCK.children:
        Image.open(store.tile_path("kampala", child)).verify()
    assert not [p for p in layer_dir.rglob(".tmp-*")]


class FlakyTiles(BaseHTTPRequestHandler):
    """Serves the Kampala fixture; the first `failures[path]` requests of a path answer 500."""

    failures: dict[str, int] = {}
    served: Counter = Counter()

    def do_GET(self) -> None:  # noqa: N802
        self.served[self.path] += 1
        if self.failures.get(self.path, 0) != 0:
            self.failures[self.path] -= 1
            self.send_error(500)
            return
        path = KAMPALA / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def flaky_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyTiles)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    FlakyTiles.failures, FlakyTiles.served = {}, Counter()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def xyz_layer(base_url: str) -> dict:
    imagery = {"type": "xyz", "url": base_url + "/{z}/{x}/{y}.png", "retries": 0, "timeout": 5}
    return {**KAMPALA_LAYER, "imagery": imagery}


def test_imagery_failing_twice_then_succeeding_yields_the_tile(
    make_settings, workers, flaky_server
):
    FlakyTiles.failures["/19/309606/261636.png"] = 2
    settings = make_settings([xyz_layer(flaky_server)], job_retries=2, retry_backoff=1)
    redis = Redis.from_url(settings.redis_url)
    workers.start(settings)
    workers.wait_ready(redis, 1)

    async def fetch():
        async with asgi_client(settings) as client:
            r = await client.get("/tiles/19/309606/261636.png?wait=60")
            return r, (await client.get("/metrics")).text

    r, metrics = asyncio.run(fetch())
    assert r.status_code == 200 and r.headers["x-tile-status"] == "final"
    assert FlakyTiles.served["/19/309606/261636.png"] == 3
    assert metric(metrics, "mapcascade_generation_retries_total") == 2
    assert metric(metrics, "mapcascade_generation_failures_total") == 0


def test_imagery_always_failing_yields_503_and_stores_nothing(make_settings, workers, flaky_server):
    FlakyTiles.failures["/19/309606/261636.png"] = -1  # forever
    settings = make_settings(
        [xyz_layer(flaky_server)], job_retries=1, retry_backoff=1, failure_cooldown=120
    )
    redis = Redis.from_url(settings.redis_url)
    workers.start(settings)
    workers.wait_ready(redis, 1)

    async def fetch():
        async with asgi_client(settings) as client:
            r = await client.get("/tiles/19/309606/261636.png?wait=60")
            again = await client.get("/tiles/19/309607/261636.png?wait=0")
            return r, again, (await client.get("/metrics")).text

    r, again, metrics = asyncio.run(fetch())
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert 0 < int(r.headers["retry-after"]) <= 120
    error = r.json()["error"]
    assert "reading the imagery failed (the imagery server answered 500)" in error
    assert "Error" not in error and "http" not in error  # no exception class, no URL
    assert again.status_code == 503  # a sibling of the failed block: same answer, no new job
    assert FlakyTiles.served["/19/309606/261636.png"] == 2
    assert metric(metrics, "mapcascade_generation_failures_total") == 1
    assert not (settings.tiles_dir / "kampala").exists() or not any(
        p.is_file() for p in (settings.tiles_dir / "kampala").rglob("*")
    )
