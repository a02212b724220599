"""Seeding and truncation through the ASGI app on a real Redis and file store (no workers:
blocks are stored by the test as a worker would, through the same hooks)."""

from __future__ import annotations

import io
import threading
import time

import mercantile
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus

from app import seeding
from app.blockjob import BlockJob, Completion, Outcome, completed, seed_enqueuer_lock
from app.main import create_app
from app.seeding import SeedPlan, check_area, tile_rect
from app.settings import Layer
from app.store import FileTileStore
from app.tiles import Block
from tests.conftest import KAMPALA

# One z19 tile (the fixture's imagery tile 19/309606/261636), a little inset so that mercantile
# yields exactly it: 1 + 4 + 16 tiles in 1 + 1 + 4 blocks over zooms 19-21.
AREA = [32.58957, 0.34813, 32.59025, 0.34881]
SEED_LAYER = {
    "name": "seedarea",
    "imagery": {"type": "dir", "path": str(KAMPALA)},
    "bounds": AREA,
    "root_zoom": 19,
    "max_zoom": 21,
    "model": "tiny",
}
# A wider layer for the validation and truncation tests.
WIDE_LAYER = {**SEED_LAYER, "name": "wide", "bounds": [32.5, 0.3, 32.7, 0.4], "max_zoom": 22}
FULL = {"layer": "seedarea", "bbox": AREA, "minzoom": 19, "maxzoom": 21}
LOOPBACK = ("127.0.0.1", 50000)


def png(colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(buf, format="PNG")
    return buf.getvalue()


def mercantile_tiles(bbox, minzoom: int, maxzoom: int) -> list[mercantile.Tile]:
    return list(mercantile.tiles(*bbox, zooms=list(range(minzoom, maxzoom + 1))))


@pytest.fixture
def settings(make_settings):
    return make_settings([SEED_LAYER, WIDE_LAYER], max_seed_tiles=5000)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings), client=LOOPBACK) as c:
        yield c


@pytest.fixture
def redis(settings):
    r = Redis.from_url(settings.redis_url)
    yield r
    r.close()


def wait_status(client: TestClient, seed_id: str, want: set[str], timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/seed/{seed_id}").json()
        if status["status"] in want and status["enqueued"] or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def wait_enqueued(client: TestClient, seed_id: str, timeout: float = 10) -> dict:
    return wait_status(client, seed_id, {"queued", "running", "done", "failed"}, timeout)


def store_as_worker(store: FileTileStore, redis: Redis, block: Block, colour: str = "red") -> None:
    """What a worker does for a block: store its four tiles, then report it to the seeds."""
    store.put_block(block, [png(colour)] * 4, {"model": "test"})
    completed(redis, Completion(block, Outcome.GENERATED))


def all_blocks(layer: str, bbox, minzoom: int, maxzoom: int) -> list[Block]:
    tiles = mercantile_tiles(bbox, minzoom, maxzoom)
    return sorted({Block.of(layer, t) for t in tiles}, key=lambda b: (b.z, b.y, b.x))


# --- planning ---


@pytest.mark.parametrize(
    ("bbox", "zooms"),
    [
        (AREA, (19, 21)),
        ([32.58, 0.34, 32.6, 0.36], (14, 18)),
        ([-0.01, -0.01, 0.01, 0.01], (10, 15)),  # across the equator and the prime meridian
        ([24.9352, 60.1642, 24.9534, 60.1791], (14, 17)),
    ],
)
def test_plan_counts_exactly_the_tiles_and_blocks_mercantile_enumerates(bbox, zooms):
    plan = SeedPlan("l", tuple(bbox), *zooms)
    tiles = mercantile_tiles(bbox, *zooms)
    assert plan.tiles == len(tiles)
    assert plan.blocks == len({Block.of("l", t) for t in tiles})
    planned = list(plan.iter_blocks())
    assert sum(n for _, n in planned) == len(tiles)
    assert {b for b, _ in planned} == {Block.of("l", t) for t in tiles}
    zs = [b.z for b, _ in planned]
    assert zs == sorted(zs)  # coarse zooms first: a block comes after its ancestors
    for z in range(zooms[0], zooms[1] + 1):
        assert tile_rect(tuple(bbox), z).count == len([t for t in tiles if t.z == z])


def test_area_is_clipped_to_the_layer():
    layer = Layer.model_validate(SEED_LAYER)
    assert check_area(layer, (32.0, 0.0, 33.0, 1.0), 19, 21) == tuple(AREA)


# --- validation ---


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**FULL, "bbox": [32.59, 0.348, 32.58, 0.349]}, "west (32.59) must be less than east"),
        ({**FULL, "bbox": [179.0, 0.0, -179.0, 1.0]}, "crossing the antimeridian is refused"),
        ({**FULL, "bbox": [32.58, 0.349, 32.59, 0.348]}, "south (0.349) must be less than north"),
        ({**FULL, "bbox": [32.58, -86.0, 32.59, 0.3]}, "latitudes must be within ±85.0511"),
        ({**FULL, "bbox": [32.58, 0.3, 32.59, 89.0]}, "latitudes must be within ±85.0511"),
        ({**FULL, "bbox": [-181.0, 0.3, 32.59, 0.4]}, "longitudes must be within -180..180"),
        ({**FULL, "minzoom": 21, "maxzoom": 20}, "minzoom (21) must not exceed maxzoom (20)"),
        (
            {**FULL, "minzoom": 18},
            "zooms 18-21 are outside layer 'seedarea', which has zooms 19-21",
        ),
        ({**FULL, "maxzoom": 22}, "zooms 19-22 are outside layer 'seedarea'"),
        (
            {**FULL, "bbox": [10.0, 10.0, 11.0, 11.0]},
            "bbox [10.0, 10.0, 11.0, 11.0] does not intersect layer 'seedarea'",
        ),
        ({**FULL, "bbox": [1, 2, 3]}, "bbox must be 4 numbers [west, south, east, north], got 3"),
        ({**FULL, "bbox": "everywhere"}, "bbox: Input should be a valid"),
        ({**FULL, "minzoom": "high"}, "minzoom: Input should be a valid integer"),
        ({"layer": "seedarea", "bbox": AREA, "minzoom": 19}, "maxzoom: Field required"),
        ({**FULL, "max_zoom": 3}, "max_zoom: Extra inputs are not permitted"),
    ],
)
def test_invalid_seed_requests_get_a_422_saying_why(client, body, message):
    r = client.post("/seed", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]
    assert r.headers["cache-control"] == "no-store"


def test_too_large_a_seed_names_the_count_and_the_limit(client):
    body = {"layer": "wide", "bbox": [32.5, 0.3, 32.7, 0.4], "minzoom": 19, "maxzoom": 20}
    tiles = len(mercantile_tiles(body["bbox"], 19, 20))
    r = client.post("/seed", json=body)
    assert r.status_code == 422
    err = r.json()
    assert f"the seed covers {tiles} tiles, over the limit of 5000 tiles" in err["error"]
    assert (err["tiles"], err["limit"]) == (tiles, 5000)


def test_unknown_layer_is_a_404(client):
    r = client.post("/seed", json={**FULL, "layer": "nowhere"})
    assert r.status_code == 404
    assert "unknown layer 'nowhere'" in r.json()["error"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"seed"'])
def test_malformed_json_is_a_4xx_json_error_not_a_500(client, raw):
    r = client.post("/seed", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    assert r.json()["error"]


# --- auth ---


def test_admin_calls_need_the_token_when_one_is_set(make_settings):
    settings = make_settings([SEED_LAYER], admin_token="s3cret")
    with TestClient(create_app(settings), client=LOOPBACK) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert c.post("/seed", json=FULL, headers=headers).status_code == 401
            assert c.get("/seed", headers=headers).status_code == 401
            r = c.request("DELETE", "/tiles", json=FULL, headers=headers)
            assert r.status_code == 401
            assert "Bearer <MAPCASCADE_ADMIN_TOKEN>" in r.json()["error"]
        good = {"Authorization": "Bearer s3cret"}
        r = c.post("/seed", json=FULL, headers=good)
        assert r.status_code == 202
        seed_id = r.json()["id"]
        assert c.get(f"/seed/{seed_id}").status_code == 200  # status by id is public
        assert c.delete(f"/seed/{seed_id}").status_code == 401
        assert c.delete(f"/seed/{seed_id}", headers=good).json()["status"] == "cancelled"
        assert c.get("/seed", headers=good).status_code == 200
        assert c.request("DELETE", "/tiles", json=FULL, headers=good).status_code == 200


def test_without_a_token_admin_calls_are_loopback_only(settings):
    app = create_app(settings)
    with TestClient(app, client=("203.0.113.5", 1234)) as remote:
        r = remote.post("/seed", json=FULL)
        assert r.status_code == 403
        assert "loopback only" in r.json()["error"]
        assert remote.request("DELETE", "/tiles", json=FULL).status_code == 403
        assert remote.get("/seed").status_code == 403
    with TestClient(app, client=LOOPBACK) as local:
        assert local.post("/seed", json=FULL).status_code == 202


# --- seeding ---


def test_seed_enqueues_every_block_after_its_ancestors(client, redis, settings):
    r = client.post("/seed", json=FULL)
    assert r.status_code == 202
    created = r.json()
    assert (created["blocks"], created["tiles"]) == (6, 21)
    assert created["status_url"].endswith(f"/seed/{created['id']}")
    assert r.headers["location"] == created["status_url"]

    status = wait_enqueued(client, created["id"])
    assert status["status"] == "queued"
    assert status["tiles"] == {
        "total": 21, "done": 0, "failed": 0, "generated": 0, "skipped": 0, "pending": 21,
    }  # fmt: skip
    assert status["blocks"]["pending"] == 6
    blocks = all_blocks("seedarea", AREA, 19, 21)
    for block in blocks:
        job = Job.fetch(BlockJob(block).id, connection=redis)
        if block.z < 19:  # renders the root zoom: nothing to wait for
            assert job.get_status() == JobStatus.QUEUED
        else:
            assert job.get_status() == JobStatus.DEFERRED
            assert job.dependency_ids == [BlockJob(block.upstream()).id]
    assert Queue(settings.queue_name, connection=redis).count == 1


def test_progress_rate_eta_and_completion(client, store, redis):
    seed_id = client.post("/seed", json=FULL).json()["id"]
    wait_enqueued(client, seed_id)
    blocks = all_blocks("seedarea", AREA, 19, 21)
    store_as_worker(store, redis, blocks[0])  # the z19 block: 1 tile of the seed
    status = client.get(f"/seed/{seed_id}").json()
    assert status["status"] == "running"
    assert status["started_at"] and status["eta_s"] is None  # one block is no rate yet
    time.sleep(0.2)
    store_as_worker(store, redis, blocks[1])  # the z20 block: 4 tiles
    status = client.get(f"/seed/{seed_id}").json()
    assert status["tiles"]["done"] == 5 and status["blocks"]["done"] == 2
    assert 0 < status["rate_tiles_per_s"] < 4 / 0.2 + 1
    assert status["eta_s"] == pytest.approx(16 / status["rate_tiles_per_s"], rel=0.05, abs=0.2)
    assert status["progress"] == pytest.approx(5 / 21, abs=1e-3)
    completed(redis, Completion(blocks[1], Outcome.EXISTS))  # a duplicate job counts once
    assert client.get(f"/seed/{seed_id}").json()["tiles"]["done"] == 5
    for block in blocks[2:]:
        store_as_worker(store, redis, block)
    status = client.get(f"/seed/{seed_id}").json()
    assert status["status"] == "done"
    assert status["tiles"]["done"] == status["tiles"]["generated"] == 21
    assert status["blocks"]["done"] == 6 and status["finished_at"]
    assert client.get("/seed").json()["seeds"][0]["id"] == seed_id


def test_seeding_a_finished_area_is_done_at_once_with_nothing_generated(client, store, redis):
    for block in all_blocks("seedarea", AREA, 19, 21):
        store.put_block(block, [png()] * 4, {"model": "test"})
    seed_id = client.post("/seed", json=FULL).json()["id"]
    status = wait_status(client, seed_id, {"done"})
    assert status["status"] == "done"
    assert status["tiles"]["done"] == status["tiles"]["skipped"] == 21
    assert status["tiles"]["generated"] == 0 and status["blocks"]["skipped"] == 6
    assert Queue("mapcascade", connection=redis).count == 0


def test_a_failed_block_fails_it_and_every_block_below_it(client, store, redis):
    seed_id = client.post("/seed", json=FULL).json()["id"]
    wait_enqueued(client, seed_id)
    root, z20, *z21 = all_blocks("seedarea", AREA, 19, 21)
    store_as_worker(store, redis, root)
    completed(
        redis, Completion(z20, Outcome.FAILED)
    )  # what the worker reports after the last retry
    status = client.get(f"/seed/{seed_id}").json()
    assert status["status"] == "failed"
    assert status["blocks"] == {
        "total": 6, "done": 1, "failed": 5, "generated": 1, "skipped": 0, "pending": 0,
    }  # fmt: skip
    assert status["tiles"]["failed"] == 20


def test_cancel_drops_the_queued_blocks_and_keeps_what_was_written(client, store, redis, settings):
    seed_id = client.post("/seed", json=FULL).json()["id"]
    wait_enqueued(client, seed_id)
    root, *rest = all_blocks("seedarea", AREA, 19, 21)
    store_as_worker(store, redis, root)
    r = client.delete(f"/seed/{seed_id}")
    assert r.status_code == 200
    status = r.json()
    assert status["status"] == "cancelled" and status["finished_at"]
    assert status["tiles"]["done"] == 1 and status["tiles"]["pending"] == 20
    for block in rest:
        assert Job.fetch(BlockJob(block).id, connection=redis).get_status() == JobStatus.CANCELED
    queue = Queue(settings.queue_name, connection=redis)
    # Only the root block's job is left (the test stored that block in its place).
    assert queue.job_ids == [BlockJob(root).id] and queue.deferred_job_registry.count == 0
    assert store.has_block(root)
    # A cancelled seed stays cancelled; cancelling again changes nothing.
    completed(redis, Completion(rest[0], Outcome.GENERATED))
    assert client.delete(f"/seed/{seed_id}").json()["status"] == "cancelled"
    assert client.get(f"/seed/{seed_id}").json()["tiles"]["done"] == 1
    assert client.delete("/seed/nope").status_code == 404
    assert client.get("/seed/nope").status_code == 404


def test_cancel_keeps_blocks_another_seed_waits_on(client, redis):
    first = client.post("/seed", json=FULL).json()["id"]
    wait_enqueued(client, first)
    second = client.post("/seed", json={**FULL, "minzoom": 20, "maxzoom": 20}).json()["id"]
    wait_enqueued(client, second)
    client.delete(f"/seed/{first}")
    root, z20, *z21 = all_blocks("seedarea", AREA, 19, 21)
    assert Job.fetch(BlockJob(z20).id, connection=redis).get_status() == JobStatus.DEFERRED
    assert Job.fetch(BlockJob(z21[0]).id, connection=redis).get_status() == JobStatus.CANCELED


def test_enqueueing_resumes_in_a_new_api_process_without_double_counting(
    settings, store, redis, monkeypatch
):
    """An API process that dies while enqueueing a seed: the next one finishes the job."""
    monkeypatch.setattr(seeding.runner, "BATCH", 2)
    blocks = all_blocks("seedarea", AREA, 19, 21)
    store.put_block(blocks[0], [png()] * 4, {"model": "test"})  # done before the seed
    app = create_app(settings)
    runner_seeds = seeding.Seeds(app.state.context.redis, app.state.context.cascade)
    plan = SeedPlan("seedarea", tuple(AREA), 19, 21)
    seed_id = runner_seeds.create(plan)
    stop = threading.Event()
    ensure = runner_seeds.cascade.ensure
    calls = []

    def dying_ensure(*args, **kwargs):  # the process dies after three blocks
        calls.append(args[1])
        if len(calls) == 3:
            stop.set()
        return ensure(*args, **kwargs)

    monkeypatch.setattr(runner_seeds.cascade, "ensure", dying_ensure)
    lock = redis.lock(seed_enqueuer_lock(seed_id), timeout=30)
    assert lock.acquire(blocking=False)
    runner_seeds.enqueue(seed_id, lock, stop)
    lock.release()
    rec = runner_seeds.record(seed_id)
    assert (rec["registered"], rec["ensured"], rec["enqueued"]) == ("4", "4", "0")
    monkeypatch.undo()

    with TestClient(create_app(settings), client=LOOPBACK) as c:  # its startup resumes the seed
        status = wait_enqueued(c, seed_id)
        assert status["enqueued"]
        assert status["blocks"]["skipped"] == 1 and status["blocks"]["pending"] == 5
        for block in blocks[1:]:
            store_as_worker(store, redis, block)
        status = c.get(f"/seed/{seed_id}").json()
        assert status["status"] == "done"
        assert status["tiles"]["done"] == 21 and status["tiles"]["generated"] == 20


# --- truncation ---


def fill(store: FileTileStore, layer: str, bbox, minzoom: int, maxzoom: int) -> list[Block]:
    blocks = all_blocks(layer, bbox, minzoom, maxzoom)
    for block in blocks:
        store.put_block(block, [png()] * 4, {"model": "test"})
    return blocks


def stored_tiles(store: FileTileStore, layer: str) -> set[tuple[int, int, int]]:
    root = store.root / layer
    return {
        (int(p.parts[-3]), int(p.parts[-2]), int(p.stem))
        for p in root.glob("*/*/*.png")
        if p.parts[-3].isdigit()
    }


def test_truncate_removes_the_tiles_and_all_their_descendants(client, store):
    # Four z19 tiles with everything below them to z22 (the wide layer's max zoom).
    area = [32.5896, 0.3475, 32.5909, 0.3488]
    blocks = fill(store, "wide", area, 19, 22)
    before = stored_tiles(store, "wide")
    target = mercantile.Tile(309606, 261636, 20 - 1)  # one z19 tile; truncate from z20 down
    tb = mercantile.bounds(target)
    bbox = [tb.west + 1e-6, tb.south + 1e-6, tb.east - 1e-6, tb.north - 1e-6]

    r = client.delete(f"/tiles?layer=wide&bbox={','.join(map(str, bbox))}&minzoom=20&maxzoom=20")
    assert r.status_code == 200, r.text
    result = r.json()
    gone = {
        t for t in before
        if t[0] >= 20 and (t[1] >> (t[0] - 19), t[2] >> (t[0] - 19)) == (target.x, target.y)
    }  # fmt: skip
    assert len(gone) == 4 + 16 + 64
    assert result["removed"] == len(gone)
    assert result["blocks_removed"] == 1 + 4 + 16
    assert result["zooms"] == [20, 22]
    assert stored_tiles(store, "wide") == before - gone
    for block in blocks:
        removed = block.z >= 19 and ancestor_xy(block, 19) == (target.x, target.y)
        assert (store.block_meta(block) is None) == removed
        assert store.has_block(block) != removed
    # Again: nothing left to remove there.
    again = client.request("DELETE", "/tiles", json={"layer": "wide", "bbox": bbox,
                                                     "minzoom": 20, "maxzoom": 21})  # fmt: skip
    assert again.status_code == 200 and again.json()["removed"] == 0


def ancestor_xy(block: Block, zoom: int) -> tuple[int, int]:
    d = block.z - zoom
    return block.x >> d, block.y >> d


def test_truncate_widens_a_cut_block_to_the_whole_block(client, store):
    fill(store, "seedarea", AREA, 19, 21)
    one = mercantile.bounds(mercantile.Tile(619212, 523272, 20))  # one of a block's 4 tiles
    bbox = [one.west + 1e-6, one.south + 1e-6, one.east - 1e-6, one.north - 1e-6]
    r = client.request("DELETE", "/tiles", json={"layer": "seedarea", "bbox": bbox,
                                                 "minzoom": 20, "maxzoom": 21})  # fmt: skip
    assert r.json()["removed"] == 4 + 16
    root = Block("seedarea", 18, 309606 >> 1, 261636 >> 1)  # z19 stays: all 4 tiles it wrote
    assert stored_tiles(store, "seedarea") == {(t.z, t.x, t.y) for t in root.children}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "give bbox=west,south,east,north, minzoom and maxzoom"),
        ("?bbox=1,2,x,4&minzoom=19", "bbox must be four numbers"),
        ("?bbox=1,2,3&minzoom=19", "bbox must be 4 numbers [west, south, east, north], got 3"),
        (f"?bbox={','.join(map(str, AREA))}", "minzoom: Input should be a valid integer"),
        (f"?layer=seedarea&bbox={','.join(map(str, AREA))}&minzoom=3", "are outside layer"),
        ("?layer=seedarea&bbox=32.6,0.3,32.5,0.4&minzoom=19", "must be less than east"),
    ],
)
def test_invalid_truncate_requests_get_a_422_saying_why(client, query, message):
    r = client.delete(f"/tiles{query}")
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]


def test_truncate_with_malformed_json_is_a_422(client):
    r = client.request(
        "DELETE", "/tiles", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert "invalid request" in r.json()["error"]
