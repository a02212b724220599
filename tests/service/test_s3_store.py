"""The S3 store as deployed: MAPCASCADE_STORE picks it, bad settings stop start-up with one line,
tiles are served from the bucket with the object's ETag, and an outage answers 503, never 500."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.errors import StoreUnavailable
from app.main import create_app
from app.s3store import S3TileStore
from app.store import FileTileStore, StoreConfigError, open_store
from app.tiles import Block
from tests.browser.live_service import free_port
from tests.conftest import ROOT, settings_env
from tests.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3
from tests.service.test_seed import SEED_LAYER, png

BLOCK = Block("seedarea", 18, 309606 >> 1, 261636 >> 1)  # the root block of the seed layer
HIT_TILE = BLOCK.children[0]
HIT = f"/tiles/seedarea/{HIT_TILE.z}/{HIT_TILE.x}/{HIT_TILE.y}.png"


def test_the_store_setting_picks_a_folder_or_a_bucket(
    make_settings, s3_server, s3_bucket, tmp_path
):
    default = open_store(make_settings())
    assert isinstance(default, FileTileStore) and default.root == tmp_path / "data" / "tiles"
    empty = open_store(make_settings(store=""))  # as a compose file's `${MAPCASCADE_STORE:-}`
    assert isinstance(empty, FileTileStore) and empty.root == tmp_path / "data" / "tiles"
    folder = open_store(make_settings(store=str(tmp_path / "elsewhere")))
    assert isinstance(folder, FileTileStore) and folder.root == tmp_path / "elsewhere"
    url = open_store(make_settings(store=f"file://{tmp_path}/there"))
    assert isinstance(url, FileTileStore) and url.root == tmp_path / "there"
    s3 = open_store(make_settings(**s3_server.settings(s3_bucket, "a/b")))
    assert isinstance(s3, S3TileStore) and s3.url == f"s3://{s3_bucket}/a/b"


def test_keys_are_the_file_store_paths_under_the_prefix_with_their_content_type(
    make_settings, s3_server, s3_bucket
):
    """A proxy in front (nginx) finds a tile at the same path in a folder and in the bucket."""
    store = open_store(make_settings(**s3_server.settings(s3_bucket, "cache")))
    store.put_block(BLOCK, [png("red")] * 4, {"model": "m"}, [png("blue")] * 4)
    child = BLOCK.children[0]
    keys = s3_server.keys(s3_bucket)
    assert f"cache/seedarea/{child.z}/{child.x}/{child.y}.png" in keys
    assert f"cache/seedarea/imagery/{child.z}/{child.x}/{child.y}.png" in keys
    assert f"cache/seedarea/blocks/{BLOCK.z}/{BLOCK.x}/{BLOCK.y}.json" in keys
    assert len(keys) == 4 + 4 + 1
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=keys[0])
    assert head["ContentType"] in ("image/png", "application/json")
    tile = s3_server.client().head_object(
        Bucket=s3_bucket, Key=f"cache/seedarea/{child.z}/{child.x}/{child.y}.png"
    )
    assert tile["ContentType"] == "image/png"


BAD_STORES = {
    "unknown scheme": ({"store": "ftp://tiles/cache"}, "unknown scheme 'ftp'"),
    "missing bucket": ({"bucket": "no-such-bucket"}, "bucket 'no-such-bucket' does not exist"),
    "wrong credentials": ({"aws_secret_access_key": "wrong"}, "refused the credentials"),
    "unreachable endpoint": ({"aws_endpoint_url": "http://127.0.0.1:{port}"}, "cannot reach"),
}


def bad_settings(s3_server: SeaweedS3, s3_bucket: str, case: str) -> tuple[dict, str]:
    change, message = BAD_STORES[case]
    settings = s3_server.settings(change.get("bucket", s3_bucket))
    settings.update({k: v.format(port=free_port()) for k, v in change.items() if k != "bucket"})
    return settings, message


@pytest.mark.parametrize("case", BAD_STORES)
def test_bad_store_settings_are_named_at_start_up(make_settings, s3_server, s3_bucket, case):
    overrides, message = bad_settings(s3_server, s3_bucket, case)
    start = time.monotonic()
    with pytest.raises(StoreConfigError) as error:
        open_store(make_settings(**overrides))
    assert time.monotonic() - start < 15  # unreachable: a timeout, not a hang
    assert str(error.value).startswith("MAPCASCADE_STORE=") and message in str(error.value)


@pytest.mark.parametrize("command", ["api", "worker"])
@pytest.mark.parametrize("case", BAD_STORES)
def test_the_api_and_worker_refuse_to_start_on_a_bad_store_with_one_line(
    make_settings, s3_server, s3_bucket, case, command
):
    overrides, message = bad_settings(s3_server, s3_bucket, case)
    env = settings_env(make_settings([SEED_LAYER], **overrides))
    args = [sys.executable, "-m", "app.cli", command] + (["--port", str(free_port())]
                                                         if command == "api" else [])  # fmt: skip
    run = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: MAPCASCADE_STORE="), run.stderr
    assert message in lines[0]


def test_a_store_outage_answers_503_with_retry_after_never_500_or_a_hang(
    make_settings, tmp_path: Path
):
    server = SeaweedS3(tmp_path / "s3").start()
    try:
        bucket = server.new_bucket()
        settings = make_settings([SEED_LAYER], **server.settings(bucket), wait_default=0.5)
        with TestClient(create_app(settings)) as client:
            client.app.state.context.store.put_block(BLOCK, [png("red")] * 4, {"m": 1})
            hit = client.get(HIT)
            assert hit.status_code == 200 and hit.headers["x-cache"] == "HIT"
            head = server.client().head_object(Bucket=bucket, Key="cache" + HIT[6:])
            assert hit.headers["etag"] == head["ETag"]  # the object's own: nginx sends it too
            assert client.get(HIT, headers={"If-None-Match": head["ETag"]}).status_code == 304

            # A miss below answers the interim tile, cut from the stored ancestor in the bucket.
            miss = f"/tiles/seedarea/{HIT_TILE.z + 1}/{2 * HIT_TILE.x}/{2 * HIT_TILE.y}.png"
            interim = client.get(miss + "?wait=0")
            assert interim.status_code == 200 and interim.headers["x-tile-status"] == "pending"
            pixel = Image.open(io.BytesIO(interim.content)).convert("RGB").getpixel((128, 128))
            assert pixel == (255, 0, 0)

            server.stop()  # the store goes away while the API serves
            for url in (HIT, miss, HIT.removesuffix(".png") + "/meta"):
                start = time.monotonic()
                r = client.get(url)
                assert time.monotonic() - start < 15, url  # never a hang
                assert r.status_code == 503, (url, r.status_code, r.text)
                assert (
                    int(r.headers["retry-after"]) > 0 and r.headers["cache-control"] == "no-store"
                )
                assert "tile store" in r.json()["error"]
    finally:
        server.stop()


def test_mapcascade_api_with_several_processes_serves_hits_from_the_bucket(
    make_settings, s3_server, s3_bucket
):
    """The start-up check opens the S3 client before uvicorn starts its processes; obstore's
    runtime would not survive a fork, uvicorn spawns them, and each serves from the bucket."""
    settings = make_settings([SEED_LAYER], **s3_server.settings(s3_bucket))
    open_store(settings).put_block(BLOCK, [png("red")] * 4, {"m": 1})
    port = free_port()
    args = [sys.executable, "-m", "app.cli", "api", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(args, env=settings_env(settings), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 90
        while True:
            try:
                httpx.get(base + "/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "api did not start"
                time.sleep(0.3)
        etags = set()
        with httpx.Client(base_url=base, timeout=15) as client:
            for _ in range(20):  # new connections: both processes take some
                r = client.get(HIT, headers={"Connection": "close"})
                assert r.status_code == 200 and r.headers["x-cache"] == "HIT", r.text
                etags.add(r.headers["etag"])
        head = s3_server.client().head_object(Bucket=s3_bucket, Key="cache" + HIT[6:])
        assert etags == {head["ETag"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_store_that_accepts_connections_and_never_answers_times_out(make_settings):
    """The hang an outage can be (a half-dead host, a stuck proxy): reads give up in seconds."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever answers
    try:
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        store = S3TileStore("tiles", "cache", endpoint=endpoint, access_key_id=ACCESS_KEY,
                            secret_access_key=SECRET_KEY)  # fmt: skip
        for read in (lambda: store.get("seedarea", HIT_TILE),
                     lambda: asyncio.run(store.get_async("seedarea", HIT_TILE))):  # fmt: skip
            start = time.monotonic()
            with pytest.raises(StoreUnavailable):
                read()
            assert time.monotonic() - start < 15
    finally:
        silent.close()
