"""Hosts that share nothing but Redis and an S3 store: the API and two workers, each with its own
empty data dir, cascade, seed and truncate into a real SeaweedFS bucket and make the same tiles
as one host on its file store; a worker SIGKILLed while it writes a block leaves no block."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import mercantile
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from app.main import create_app
from app.store import open_store
from app.tiles import Block, Tile
from tests.browser.live_service import free_port
from tests.service.test_seed import AREA, FULL, LOOPBACK, SEED_LAYER, wait_status

pytestmark = pytest.mark.slow

ROOT_BLOCK = Block("seedarea", 18, 309606 >> 1, 261636 >> 1)
TILES = [Tile(t.x, t.y, t.z) for t in mercantile.tiles(*AREA, zooms=[19, 20, 21])]


def seed_all(api: TestClient, body: dict, timeout: float = 240) -> dict:
    seed_id = api.post("/seed", json=body).json()["id"]
    status = wait_status(api, seed_id, {"done", "failed", "cancelled"}, timeout=timeout)
    assert status["status"] == "done", status
    return status


def tile_bytes(api: TestClient, tiles: list[Tile]) -> dict[Tile, bytes]:
    out = {}
    for t in tiles:
        r = api.get(f"/tiles/seedarea/{t.z}/{t.x}/{t.y}.png?wait=0")
        assert r.status_code == 200 and r.headers["x-tile-status"] == "final", (t, r.headers)
        out[t] = r.content
    return out


def test_two_hosts_sharing_only_redis_and_s3_make_the_tiles_of_one_host(
    make_settings, workers, s3_server, s3_bucket, redis_url, tmp_path: Path
):
    # One host: one worker on its own file store.
    one = make_settings([SEED_LAYER])
    redis = Redis.from_url(redis_url)
    workers.start(one)
    with TestClient(create_app(one), client=LOOPBACK) as api:
        workers.wait_ready(redis, 1)
        seed_all(api, FULL)
        expected = tile_bytes(api, TILES)
    workers.stop_all()
    redis.flushall()

    # Three hosts: the API and two workers, each with an empty data dir of its own.
    def host(name: str):
        return make_settings(
            [SEED_LAYER], data_dir=tmp_path / name, **s3_server.settings(s3_bucket)
        )

    api_host, gpu_hosts = host("api-host"), [host("gpu-1"), host("gpu-2")]
    for settings in gpu_hosts:
        workers.start(settings)
    with TestClient(create_app(api_host), client=LOOPBACK) as api:
        workers.wait_ready(redis, 2)
        # The cascade: a miss at the deepest zoom queues its block and both ancestors.
        deepest = max(TILES, key=lambda t: (t.z, t.x, t.y))
        r = api.get(f"/tiles/seedarea/{deepest.z}/{deepest.x}/{deepest.y}.png?wait=120")
        assert r.status_code == 200 and r.headers["x-tile-status"] == "final"
        assert r.content == expected[deepest]
        # Seeding fills the rest; every tile is the one-host tile, byte for byte.
        seed_all(api, FULL)
        assert tile_bytes(api, TILES) == expected
        keys = s3_server.keys(s3_bucket)
        tiles = [k for k in keys if re.fullmatch(r"cache/seedarea/\d+/\d+/\d+\.png", k)]
        assert len(tiles) == 6 * 4  # the 6 blocks' tiles: 21 in the area, 3 beside it at z19

        # Truncation from z20 down removes the objects; seeding again makes the same tiles.
        removed = api.request("DELETE", "/tiles", json={**FULL, "minzoom": 20}).json()
        assert removed["removed"] == 4 + 16
        left = [k for k in s3_server.keys(s3_bucket) if re.match(r"cache/seedarea/2[01]/", k)]
        assert left == []
        seed_all(api, {**FULL, "minzoom": 20})
        assert tile_bytes(api, TILES) == expected
    # Nothing was written on any host's own disk.
    for name in ("api-host", "gpu-1", "gpu-2"):
        assert not (tmp_path / name / "tiles").exists(), name
    redis.close()


class StallingProxy:
    """A TCP proxy to the S3 server that holds the first PUT of a block's metadata forever,
    so a worker can be killed between its tiles and its metadata."""

    METADATA_PUT = re.compile(rb"PUT [^ ]*/blocks/[^ ]*\.json ")

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self.stalled = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, to_store: bool) -> None:
        try:
            while data := source.recv(65536):
                if to_store and self.METADATA_PUT.search(data):
                    self.stalled.set()
                    return  # held: the store never hears of this metadata
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self._server.close()


def test_a_worker_killed_while_writing_a_block_leaves_no_visible_block(
    make_settings, workers, s3_server, s3_bucket, redis_url, tmp_path: Path
):
    proxy = StallingProxy(s3_server.port)
    settings = make_settings([SEED_LAYER], **s3_server.settings(s3_bucket))
    store = open_store(settings)
    redis = Redis.from_url(redis_url)
    try:
        first = workers.start(settings, {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"})
        with TestClient(create_app(settings), client=LOOPBACK) as api:
            tile = ROOT_BLOCK.children[0]
            url = f"/tiles/seedarea/{tile.z}/{tile.x}/{tile.y}.png"
            assert api.get(url + "?wait=0").headers["x-tile-status"] == "pending"
            assert proxy.stalled.wait(180), "the worker never wrote the block's metadata"
            os.killpg(first.pid, signal.SIGKILL)  # between its tiles and its metadata
            first.wait()

            # Every object the worker put is whole; the block is not there.
            left = {}
            for child in ROOT_BLOCK.children:
                key = f"cache/seedarea/{child.z}/{child.x}/{child.y}.png"
                left[key] = s3_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read()
                assert Image.open(io.BytesIO(left[key])).size == (256, 256)
            assert not any("/blocks/" in k for k in s3_server.keys(s3_bucket))
            assert not store.has_block(ROOT_BLOCK) and store.block_meta(ROOT_BLOCK) is None
            assert api.get(url.removesuffix(".png") + "/meta").status_code == 404

            # A restarted worker on this host takes the block up again and completes it.
            workers.start(settings)
            deadline = time.monotonic() + 180
            while not store.has_block(ROOT_BLOCK):
                assert time.monotonic() < deadline, "the block was never completed"
                time.sleep(0.5)
            meta = api.get(url.removesuffix(".png") + "/meta")
            assert meta.status_code == 200 and meta.json()["block"] == [18, 154803, 130818]
            # Generation is deterministic: the tiles left before the kill are the block's own,
            # so a tile served in between never changes.
            for key, body in left.items():
                assert (
                    s3_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read() == body
                )
    finally:
        proxy.close()
        redis.close()
