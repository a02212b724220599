"""The HTTP contract of the tile service, through the ASGI app, on a real Redis and file store."""

from __future__ import annotations

import io
from email.utils import formatdate

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from app.cli import main as cli
from app.main import create_app
from app.store import FileTileStore
from app.tiles import Block, Tile
from tests.conftest import KAMPALA_LAYER

# Inside the Kampala test layer (root 19, max 22): a z19 tile and its block.
TILE = Tile(309606, 261636, 19)
URL = f"/tiles/{TILE.z}/{TILE.x}/{TILE.y}.png"


def png(colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def settings(make_settings):
    return make_settings([KAMPALA_LAYER], wait_default=0.0, max_outstanding_per_client=2)


def put_block_of(store: FileTileStore, tile: Tile, colour: str = "red") -> Block:
    block = Block.of("kampala", tile)
    store.put_block(block, [png(colour)] * 4, {"model": "test"})
    return block


def test_stored_tile_comes_back_byte_identical_with_cache_headers(client, store):
    put_block_of(store, TILE)
    r = client.get(URL)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content == png("red")
    assert r.headers["x-cache"] == "HIT"
    assert r.headers["cache-control"] == "public, max-age=86400"
    assert r.headers["etag"].startswith('"')
    assert "GMT" in r.headers["last-modified"]


def test_layer_path_serves_the_same_tile(client, store):
    put_block_of(store, TILE)
    assert client.get(f"/tiles/kampala/{TILE.z}/{TILE.x}/{TILE.y}.png").content == png("red")


def test_conditional_requests_answer_304(client, store):
    put_block_of(store, TILE)
    first = client.get(URL)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    r = client.get(URL, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert client.get(URL, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get(URL, headers={"If-Modified-Since": modified}).status_code == 304
    assert (
        client.get(URL, headers={"If-Modified-Since": formatdate(0, usegmt=True)}).status_code
        == 200
    )
    assert client.get(URL, headers={"If-Modified-Since": "not a date"}).status_code == 200
    # If-None-Match wins over If-Modified-Since
    both = {"If-None-Match": '"other"', "If-Modified-Since": modified}
    assert client.get(URL, headers=both).status_code == 200


def test_head_has_get_headers_and_no_body(client, store):
    put_block_of(store, TILE)
    r = client.head(URL)
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(png("red")))
    assert r.headers["x-cache"] == "HIT"


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/tiles/19/309612/524288.png", 404, "x and y must be in 0..524287"),
        ("/tiles/19/-1/261632.png", 404, "x and y must be in"),
        ("/tiles/31/0/0.png", 404, "zoom 31 is outside"),
        ("/tiles/18/154806/130816.png", 404, "zoom 18 is outside layer 'kampala' (19..22)"),
        ("/tiles/23/0/0.png", 404, "zoom 23 is outside layer"),
        ("/tiles/19/0/0.png", 404, "outside the bounds of layer 'kampala'"),
        ("/tiles/nolayer/19/309606/261636.png", 404, "unknown layer 'nolayer'"),
        ("/tiles/19/309606/261636.jpg", 415, "unknown tile format 'jpg'"),
        ("/tiles/19/abc/261632.png", 422, "path.x"),
        ("/tiles/19/1.5/261632.png", 422, "path.x"),
        # One URL per tile: other spellings of a number are not tiles.
        ("/tiles/19/+309606/261636.png", 404, "x '+309606' is not written as a tile number"),
        ("/tiles/019/309606/261636.png", 404, "z '019' is not written as a tile number"),
        ("/tiles/19/309606/261636.0.png", 404, "y '261636.0' is not written"),
        ("/tiles/kampala/19/309606/0261636.png", 404, "y '0261636' is not written"),
        ("/tiles/19/309612/99999999999999999999999999.png", 404, "x and y must be in"),
        ("/tiles/19/309612.png", 404, "Not Found"),
        (URL + "?wait=-1", 422, "query.wait"),
        (URL + "?wait=abc", 422, "query.wait"),
    ],
)
def test_bad_tile_requests_get_clear_json_errors(client, path, status, message):
    r = client.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    assert message in r.json()["error"]


def test_oversize_path_is_rejected_not_crashed(client):
    r = client.get("/tiles/19/" + "9" * 5000 + "/1.png")
    assert r.status_code in (404, 414, 422)


def test_miss_answers_transparent_interim_tile_marked_pending(client):
    r = client.get(URL)  # no worker: the block is queued and the wait is 0
    assert r.status_code == 200
    assert r.headers["x-tile-status"] == "pending"
    assert r.headers["cache-control"] == "no-store"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (256, 256) and img.getextrema()[3] == (0, 0)  # fully transparent


def test_interim_tile_is_the_ancestor_quadrant_upsampled(client, store):
    # Parent tile at z19: left half red, right half blue; a z20 child in the right column.
    left_red = Image.new("RGB", (256, 256), "red")
    left_red.paste((0, 0, 255), (128, 0, 256, 256))
    buf = io.BytesIO()
    left_red.save(buf, format="PNG")
    store.put_block(Block.of("kampala", TILE), [buf.getvalue()] * 4, {})
    child = Tile(2 * TILE.x + 1, 2 * TILE.y, 20)
    r = client.get(f"/tiles/20/{child.x}/{child.y}.png")
    assert r.headers["x-tile-status"] == "pending"
    img = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert img.getpixel((128, 128)) == (0, 0, 255)
    assert img.getextrema() == ((0, 0), (0, 0), (255, 255))


def test_anonymous_misses_are_bounded_but_hits_are_not(client, store):
    put_block_of(store, TILE)
    # Two distinct z20 blocks (each needs no new ancestor: the z19 block is stored).
    assert client.get("/tiles/20/619212/523272.png").status_code == 200
    assert client.get("/tiles/20/619214/523272.png").status_code == 200
    r = client.get("/tiles/20/619212/523274.png")
    assert r.status_code == 429
    assert r.json()["limit"] == 2 and int(r.headers["retry-after"]) > 0
    assert client.get(URL).status_code == 200  # cached tiles are never limited
    # A repeated miss of an already queued block costs nothing.
    assert client.get("/tiles/20/619213/523273.png").status_code == 200


def test_meta_endpoint(client, store):
    put_block_of(store, TILE)
    r = client.get(f"/tiles/{TILE.z}/{TILE.x}/{TILE.y}/meta")
    assert r.status_code == 200
    assert r.json()["block"] == [18, TILE.x // 2, TILE.y // 2] and r.json()["model"] == "test"
    missing = client.get("/tiles/20/619212/523272/meta")
    assert missing.status_code == 404 and "not been generated" in missing.json()["error"]


def test_tilejson_fields_and_proxy_urls(client):
    tj = client.get("/tiles.json").json()
    assert tj["tilejson"] == "3.0.0"
    assert tj["minzoom"] == 19 and tj["maxzoom"] == 22
    assert tj["bounds"] == KAMPALA_LAYER["bounds"]
    lon, lat, zoom = tj["center"]
    assert 32.5896 < lon < 32.5909 and 0.3475 < lat < 0.3488 and 19 <= zoom <= 22
    assert tj["attribution"] == KAMPALA_LAYER["attribution"]
    assert tj["tiles"] == ["http://testserver/tiles/{z}/{x}/{y}.png"]
    forwarded = {
        "X-Forwarded-Host": "maps.example.org",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": "/cascade/",
    }
    # From anyone but a trusted proxy, forwarded headers are not reflected into the URLs.
    spoofed = client.get("/tiles.json", headers=forwarded).json()
    assert spoofed["tiles"] == ["http://testserver/tiles/{z}/{x}/{y}.png"]
    assert client.get("/kampala/tiles.json").json()["name"] == "kampala"
    assert client.get("/nolayer/tiles.json").status_code == 404


def test_tilejson_urls_follow_a_trusted_proxy_or_the_public_url(make_settings):
    forwarded = {
        "X-Forwarded-Host": "maps.example.org",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Prefix": "/cascade/",
    }
    proxy = make_settings([KAMPALA_LAYER], trusted_proxies=["testclient"])
    with TestClient(create_app(proxy)) as c:
        proxied = c.get("/tiles.json", headers=forwarded).json()
    assert proxied["tiles"] == ["https://maps.example.org/cascade/tiles/{z}/{x}/{y}.png"]
    public = make_settings([KAMPALA_LAYER], public_url="https://tiles.example.net/")
    with TestClient(create_app(public)) as c:
        fixed = c.get("/tiles.json", headers=forwarded).json()
    assert fixed["tiles"] == ["https://tiles.example.net/tiles/{z}/{x}/{y}.png"]


def test_hosts_outside_the_allowed_list_get_a_json_400(make_settings):
    settings = make_settings([KAMPALA_LAYER], allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(create_app(settings), base_url="http://localhost:8000") as c:
        assert c.get("/health").status_code == 200
        r = c.get("/health", headers={"Host": "evil.example.com"})
        assert r.status_code == 400 and "'evil.example.com' is not served here" in r.json()["error"]
        assert c.delete("/tiles", headers={"Host": "rebound.example"}).status_code == 400


def test_health_and_ready_without_worker(client):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["workers"] == 0 and r.json()["redis"] == "ok"


def test_metrics_count_requests_and_cache_results(client, store):
    put_block_of(store, TILE)
    client.get(URL)
    client.get(URL)
    client.get("/tiles/19/0/0.png")
    text = client.get("/metrics").text
    assert 'mapcascade_tile_cache_total{result="hit"} 2.0' in text
    route = 'route="/tiles/{z}/{x}/{y}.{fmt}"'
    assert f'mapcascade_http_requests_total{{method="GET",{route},status="200"}} 2.0' in text
    assert f'mapcascade_http_requests_total{{method="GET",{route},status="404"}} 1.0' in text
    assert "mapcascade_generated_blocks_total 0.0" in text
    assert "mapcascade_generation_failures_total 0.0" in text
    assert 'mapcascade_queue_depth{state="queued"}' in text
    assert "mapcascade_generation_duration_seconds_bucket" in text


def test_cors_allows_any_origin_by_default(client, store):
    put_block_of(store, TILE)
    r = client.get(URL, headers={"Origin": "https://example.org"})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "X-Tile-Status" in r.headers["access-control-expose-headers"]


def test_pages_are_served(client):
    assert "leaflet" in client.get("/").text.lower()
    assert "ol" in client.get("/openlayers").text.lower()


def test_cli_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "api", "worker", "seed", "generate", "eval"):
        assert command in result.output
    serve_help = CliRunner().invoke(cli, ["serve", "--help"])
    assert "--data-dir" in serve_help.output and "--port" in serve_help.output


def test_cli_rejects_bad_port():
    result = CliRunner().invoke(cli, ["serve", "--port", "70000"])
    assert result.exit_code == 2 and "70000" in result.output


def test_imagery_under_a_generated_tile_is_served_beside_it(client, store):
    imagery = png("green")
    url = f"/imagery/kampala/{TILE.z}/{TILE.x}/{TILE.y}.png"
    before = client.get(url)
    assert before.status_code == 404 and before.json()["status"] == 404
    assert before.headers["cache-control"] == "no-store"
    store.put_block(Block.of("kampala", TILE), [png("red")] * 4, {"model": "test"}, [imagery] * 4)
    r = client.get(url)
    assert r.status_code == 200 and r.content == imagery
    assert r.headers["content-type"] == "image/png" and r.headers["x-tile-status"] == "final"
    assert client.get(URL).content == png("red")  # the map tile is not the imagery
    assert client.head(url).status_code == 200
    assert client.get(url, headers={"If-None-Match": r.headers["etag"]}).status_code == 304


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/imagery/kampala/{TILE.z}/{TILE.x}/{TILE.y}.jpg", 415),
        (f"/imagery/kampala/{TILE.z}/{1 << TILE.z}/{TILE.y}.png", 404),  # x off the grid
        ("/imagery/kampala/3/1/1.png", 404),  # zoom outside the layer
        (f"/imagery/nope/{TILE.z}/{TILE.x}/{TILE.y}.png", 404),  # unknown layer
        (f"/imagery/kampala/{TILE.z}/abc/{TILE.y}.png", 422),
        ("/imagery/kampala/19/" + "9" * 400 + "/1.png", 404),  # oversize number
    ],
)
def test_bad_imagery_requests_get_json_errors(client, path, status):
    r = client.get(path)
    assert r.status_code == status
    assert r.json()["status"] == status


@pytest.mark.parametrize(
    "since",
    ["Sat, 01 Jan 99999999999 00:00:00 GMT", "01 Jan 9999999999999999999 00:00:00",
     "Thu, 01 Jan 1970 00:00:00 +9999", "yesterday", ""],
)  # fmt: skip
def test_a_malformed_if_modified_since_is_ignored_not_a_500(client, store, since):
    put_block_of(store, TILE)
    r = client.get(URL, headers={"If-Modified-Since": since})
    assert r.status_code == 200 and r.content == png("red")


@pytest.mark.parametrize("path", ["/health", "/tiles.json", "/kampala/tiles.json", "/layers",
                                  "/metrics", "/ready", "/", "/openlayers", "/maplibre",
                                  "/seed"])  # fmt: skip
def test_head_is_answered_on_every_get_route(client, path):
    get, head = client.get(path), client.head(path)
    assert head.status_code == get.status_code != 405
    assert head.headers["content-type"] == get.headers["content-type"] and head.content == b""


def test_a_burst_of_misses_never_overshoots_the_budget(make_settings):
    # 20 distinct blocks asked at once by one client with a budget of 16: check and charge are
    # one Redis script, so exactly 16 are queued (the old check-then-charge queued up to 20).
    from concurrent.futures import ThreadPoolExecutor

    wide = {**KAMPALA_LAYER, "bounds": [32.5, 0.3, 32.7, 0.4]}
    settings = make_settings([wide], wait_default=0.0, max_outstanding_per_client=16)
    roots = [(TILE.x + 2 * i, TILE.y) for i in range(20)]  # 20 root-zoom blocks, no ancestors
    with TestClient(create_app(settings)) as c, ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda xy: c.get(f"/tiles/19/{xy[0]}/{xy[1]}.png").status_code,
                              roots))  # fmt: skip
    assert sorted(codes).count(200) == 16 and codes.count(429) == 4


def test_concurrent_misses_for_one_chain_enqueue_each_block_once(make_settings):
    # 30 requests at once for one z21 tile: its block and the two above it are queued once
    # each (before, every request that found no job enqueued it again: queue depth 2-3x).
    from concurrent.futures import ThreadPoolExecutor

    from redis import Redis
    from rq import Queue

    settings = make_settings([KAMPALA_LAYER], wait_default=0.0)
    deep = f"/tiles/21/{TILE.x * 4 + 1}/{TILE.y * 4 + 2}.png"
    with TestClient(create_app(settings)) as c, ThreadPoolExecutor(30) as pool:
        codes = list(pool.map(lambda _: c.get(deep).status_code, range(30)))
    assert codes == [200] * 30
    queue = Queue(settings.queue_name, connection=Redis.from_url(settings.redis_url))
    queued, deferred = queue.get_job_ids(), queue.deferred_job_registry.get_job_ids()
    assert len(queued) == 1 and len(deferred) == 2, (queued, deferred)  # root, then two below


def test_a_miss_waiting_below_a_failed_ancestor_sees_the_failure(make_settings):
    # Before, a request already waiting saw only its own deferred job and waited out its time.
    import threading
    import time

    from redis import Redis
    from rq.job import Job, JobStatus

    settings = make_settings([KAMPALA_LAYER], wait_default=0.0, wait_max=20.0)
    deep = f"/tiles/21/{TILE.x * 4}/{TILE.y * 4}.png"
    redis = Redis.from_url(settings.redis_url)

    def fail_root_soon() -> None:
        time.sleep(1.0)
        Job.fetch("block_kampala_18_154803_130818", connection=redis).set_status(JobStatus.FAILED)

    with TestClient(create_app(settings)) as c:
        threading.Thread(target=fail_root_soon).start()
        started = time.monotonic()
        r = c.get(deep + "?wait=20")
        waited = time.monotonic() - started
    assert r.status_code == 503 and "generating tile 21/" in r.json()["error"]
    assert waited < 5, f"waited {waited:.1f}s for a block whose ancestor had failed"
