"""A seed generated end to end by a real `mapcascade worker` (tiny model), across an API restart."""

from __future__ import annotations

from datetime import datetime

import mercantile
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from app.store import FileTileStore
from app.tiles import Block, Tile
from tests.service.test_seed import AREA, FULL, LOOPBACK, SEED_LAYER, all_blocks, wait_status

pytestmark = pytest.mark.slow


def tiles_mtime_ns(store: FileTileStore, layer: str, tiles: list[Tile]) -> list[int]:
    return [store.tile_path(layer, t).stat().st_mtime_ns for t in tiles]


def test_seed_generates_the_area_parents_first_across_an_api_restart(make_settings, workers):
    settings = make_settings([SEED_LAYER])
    store = FileTileStore(settings.tiles_dir)
    redis = Redis.from_url(settings.redis_url)

    # Submitted before any worker runs, to an API process that then goes away.
    with TestClient(create_app(settings), client=LOOPBACK) as first:
        created = first.post("/seed", json=FULL).json()
        seed_id = created["id"]
        assert wait_status(first, seed_id, {"queued"})["enqueued"]

    workers.start(settings)
    with TestClient(create_app(settings), client=LOOPBACK) as api:  # the restarted API
        workers.wait_ready(redis, 1)
        status = wait_status(api, seed_id, {"done", "failed", "cancelled"}, timeout=120)
        assert status["status"] == "done", status
        assert status["tiles"]["total"] == status["tiles"]["done"] == created["tiles"] == 21
        assert status["blocks"]["total"] == status["blocks"]["done"] == created["blocks"] == 6
        assert status["tiles"]["generated"] == 21 and status["tiles"]["failed"] == 0
        elapsed = _seconds_between(status["started_at"], status["finished_at"])
        print(f"\nseed of 6 blocks: rate {status['rate_tiles_per_s']} tiles/s, {elapsed:.2f}s")

        for tile in mercantile.tiles(*AREA, zooms=[19, 20, 21]):
            assert store.exists("seedarea", tile), tile

        # Parents first: every block's tiles were written after its upstream block was stored,
        # and after the reference tiles its metadata names.
        for block in all_blocks("seedarea", AREA, 19, 21):
            meta = store.block_meta(block)
            assert meta is not None
            written = min(tiles_mtime_ns(store, "seedarea", block.children))
            if block.z >= SEED_LAYER["root_zoom"]:
                upstream_done = store.meta_path(block.upstream()).stat().st_mtime_ns
                assert upstream_done < written, block
            else:
                assert meta["reference_tiles"] == []
            for z, x, y in meta["reference_tiles"]:
                ref = Tile(x, y, z)
                assert store.tile_path("seedarea", ref).stat().st_mtime_ns < written
                span = 4 if block.child_zoom - 2 >= 19 else 2
                assert z == block.child_zoom - span // 2
                assert (block.x >> (block.z - z), block.y >> (block.z - z)) == (x, y)

        # The same area again: nothing to generate, done at once.
        again = api.post("/seed", json=FULL).json()
        status = wait_status(api, again["id"], {"done"}, timeout=5)
        assert status["status"] == "done"
        assert status["tiles"]["generated"] == 0 and status["tiles"]["skipped"] == 21

        # Truncate z20 down, seed it again: the z19 tiles stay as they were.
        z19 = Block("seedarea", 18, 309606 >> 1, 261636 >> 1)
        kept = tiles_mtime_ns(store, "seedarea", z19.children)
        removed = api.request("DELETE", "/tiles", json={**FULL, "minzoom": 20}).json()
        assert removed["removed"] == 4 + 16
        third = api.post("/seed", json={**FULL, "minzoom": 20}).json()
        status = wait_status(api, third["id"], {"done", "failed"}, timeout=60)
        assert status["status"] == "done" and status["tiles"]["generated"] == 20
        assert tiles_mtime_ns(store, "seedarea", z19.children) == kept
    redis.close()


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
