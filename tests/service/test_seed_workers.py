"""A seed generated end to end by a real `mapcascade worker` (tiny model), across an API restart."""

from __future__ import annotations

import time
from datetime import datetime

import mercantile
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.blockjob import BlockJob
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
            # The ancestor first, then the neighbours of it its context margin was cut from.
            for i, (z, x, y) in enumerate(meta["reference_tiles"]):
                ref = Tile(x, y, z)
                assert store.tile_path("seedarea", ref).stat().st_mtime_ns < written
                span = 4 if block.child_zoom - 2 >= 19 else 2
                assert z == block.child_zoom - span // 2
                ax, ay = block.x >> (block.z - z), block.y >> (block.z - z)
                assert (ax, ay) == (x, y) if i == 0 else max(abs(ax - x), abs(ay - y)) == 1

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


def test_blocks_below_a_failed_block_leave_no_deferred_job_and_a_later_miss_retries(
    make_settings, workers
):
    """RQ never enqueues the dependents of a failed job: the seed counts them failed and drops
    their deferred jobs; a miss below answers 503 during the cooldown, and enqueues after it."""
    dead = {"type": "xyz", "url": "http://127.0.0.1:9/{z}/{x}/{y}.png", "retries": 0, "timeout": 2}
    layer = {**SEED_LAYER, "imagery": dead}
    # A long cooldown, so a loaded machine cannot outlast it between the failure and the miss.
    settings = make_settings([layer], job_retries=0, failure_cooldown=600)
    redis = Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=redis)
    root, z20, *z21 = all_blocks("seedarea", AREA, 19, 21)

    def status_of(block: Block) -> JobStatus | None:
        try:
            return Job.fetch(BlockJob(block).id, connection=redis).get_status()
        except NoSuchJobError:
            return None

    def until(condition, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    workers.start(settings)
    with TestClient(create_app(settings), client=LOOPBACK) as api:
        workers.wait_ready(redis, 1)
        seed_id = api.post("/seed", json=FULL).json()["id"]
        status = wait_status(api, seed_id, {"failed"}, timeout=60)
        assert status["status"] == "failed" and status["blocks"]["failed"] == 6
        until(lambda: status_of(root) == JobStatus.FAILED)
        workers.stop_all()  # nothing runs what a miss enqueues from here on
        assert queue.deferred_job_registry.count == 0
        assert [status_of(b) for b in [z20, *z21]] == [None] * 5

        tile = z21[0].children[0]
        url = f"/tiles/{tile.z}/{tile.x}/{tile.y}.png?wait=0"
        r = api.get(url)
        assert r.status_code == 503 and 0 < int(r.headers["retry-after"]) <= 600, r.text
        assert [status_of(b) for b in [z20, z21[0]]] == [None, None]

        Job.fetch(BlockJob(root).id, connection=redis).delete()  # what the cooldown's expiry does
        r = api.get(url)
        assert r.status_code == 200 and r.headers["x-tile-status"] == "pending"
        assert status_of(root) == JobStatus.QUEUED
        assert [status_of(b) for b in [z20, z21[0]]] == [JobStatus.DEFERRED] * 2
    redis.close()


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_jobs(settings, monkeypatch, max_jobs: int | None = None) -> None:
    """A real RQ worker in this process (the worker's own settings come from the environment)."""
    from rq import SimpleWorker

    from tests.conftest import settings_env
    from worker.context import current

    for key, value in settings_env(settings).items():
        if key.startswith("MAPCASCADE_"):
            monkeypatch.setenv(key, value)
    current.cache_clear()
    redis = Redis.from_url(settings.redis_url)
    worker = SimpleWorker([Queue(settings.queue_name, connection=redis)], connection=redis)
    worker.work(burst=True, max_jobs=max_jobs, with_scheduler=False)
    current.cache_clear()


def test_a_truncate_racing_a_seed_replans_the_queued_blocks_below_it(make_settings, monkeypatch):
    settings = make_settings([SEED_LAYER])
    with TestClient(create_app(settings), client=LOOPBACK) as api:
        seed_id = api.post("/seed", json=FULL).json()["id"]
        wait_status(api, seed_id, {"queued"})
        run_jobs(settings, monkeypatch, max_jobs=2)  # the root and z19 blocks; four z20 queued
        store = FileTileStore(settings.tiles_dir)
        assert store.has_block(Block("seedarea", 19, 309606, 261636))
        bbox = ",".join(map(str, AREA))
        r = api.delete(f"/tiles?layer=seedarea&bbox={bbox}&minzoom=19&maxzoom=19")
        assert r.status_code == 200 and r.json()["blocks_removed"] == 2, r.text
        assert r.json()["blocks_requeued"] == 4
        # The four queued blocks now lack their reference: the truncate queued it again.
        run_jobs(settings, monkeypatch)
        status = wait_status(api, seed_id, {"done", "failed", "cancelled"})
    assert status["status"] == "done", status
    assert status["blocks"]["failed"] == 0 and status["blocks"]["done"] == 6
    assert all(store.has_block(b) for b in all_blocks("seedarea", AREA, 19, 21))
