"""The nginx front (deploy/nginx/) on an S3 store: Debian's nginx reads hits from a SeaweedFS
bucket that allows anonymous reads, with the API's bytes and headers; misses, and every tile of
a private bucket, reach the live `mapcascade api`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from app.cli.nginx import render
from app.s3store import S3TileStore
from app.settings import Settings
from app.tiles import Block
from tests.browser.live_service import free_port
from tests.s3server import SeaweedS3
from tests.service.test_nginx_front import (
    BLOCK,
    FRONT,
    HIT,
    MISS,
    NGINX,
    OTHER,
    Front,
    api_behind_nginx,
    assert_same_304s,
    hits_counted,
    png,
    start_nginx,
    tile_headers,
    tile_url,
    wait_for,
)

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"
)
PUBLIC, PRIVATE = "public-tiles", "private-tiles"
PREFIX = "cache"


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory) -> Iterator[SeaweedS3]:
    """SeaweedFS whose `public-tiles` bucket anyone may read; both buckets hold the same tiles."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"), public_buckets=(PUBLIC,)).start()
    try:
        tiles = [png((40 * i, 120, 200)) for i in range(4)]
        for bucket in (PUBLIC, PRIVATE):
            server.client().create_bucket(Bucket=bucket)
            store = S3TileStore.from_settings(Settings(**server.settings(bucket, PREFIX)))
            store.put_block(BLOCK, tiles, {"model": "test"})
            store.put_block(Block("other", BLOCK.z, BLOCK.x, BLOCK.y), tiles[::-1], {})
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_front(tmp: Path, redis_url: str, seaweed: SeaweedS3, bucket: str) -> Iterator[Front]:
    """`mapcascade api` on the bucket, nginx in front of it reading the same bucket."""
    layers = tmp / "layers.yml"
    layers.write_text(yaml.safe_dump({"layers": [FRONT, OTHER]}))
    data_dir = tmp / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MAPCASCADE_", "AWS_"))}  # fmt: skip
    env.update(
        seaweed.env(bucket, PREFIX),
        MAPCASCADE_REDIS_URL=redis_url,
        MAPCASCADE_DATA_DIR=str(data_dir),
        MAPCASCADE_LAYERS_FILE=str(layers),
        MAPCASCADE_CORS_ORIGINS='["*"]',
        MAPCASCADE_TRUSTED_PROXIES='["127.0.0.1"]',
        MAPCASCADE_WAIT_MAX="0.2",  # no worker runs: a miss answers its interim tile at once
    )
    settings = Settings(redis_url=redis_url, data_dir=data_dir, layers_file=layers,
                        cors_origins=["*"], **seaweed.settings(bucket, PREFIX))  # fmt: skip
    with api_behind_nginx(tmp, env, settings) as front:
        yield front


@pytest.fixture(scope="module")
def front(tmp_path_factory, redis_server, seaweed) -> Iterator[Front]:
    with running_front(tmp_path_factory.mktemp("front"), redis_server.url, seaweed, PUBLIC) as f:
        yield f


def stored_bytes(seaweed: SeaweedS3, bucket: str, layer: str) -> bytes:
    key = f"{PREFIX}/{layer}/{HIT.z}/{HIT.x}/{HIT.y}.png"
    return seaweed.client().get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("layer", [None, "front", "other"])
@pytest.mark.parametrize("origin", [None, "https://maps.example.org"], ids=["no-origin", "cors"])
def test_a_hit_is_read_from_the_bucket_with_the_api_bytes_and_headers(
    front, seaweed, method, layer, origin
) -> None:
    headers = {"Origin": origin} if origin else {}
    before = hits_counted(front)
    via_nginx = httpx.request(method, front.nginx + tile_url(HIT, layer), headers=headers)
    assert hits_counted(front) == before, "the hit reached the API"
    direct = httpx.request(method, front.api + tile_url(HIT, layer), headers=headers)
    assert hits_counted(front) == before + 1
    assert via_nginx.status_code == direct.status_code == 200
    assert via_nginx.content == direct.content
    if method == "GET":
        assert via_nginx.content == stored_bytes(seaweed, PUBLIC, layer or "front")
    assert tile_headers(via_nginx) == tile_headers(direct)
    assert via_nginx.headers["content-type"] == "image/png"
    assert via_nginx.headers["x-cache"] == "HIT"
    assert via_nginx.headers["cache-control"] == "public, max-age=86400"
    # Nothing of the store's own: no request ids, no SeaweedFS metadata, not its Server.
    extra = {h for h in via_nginx.headers if h.startswith(("x-amz", "seaweed"))}
    assert not extra and via_nginx.headers["server"] == "nginx"
    assert ("access-control-allow-origin" in via_nginx.headers) == bool(origin)


def test_the_object_etag_gives_the_api_304s(front) -> None:
    assert_same_304s(front)


def test_a_range_is_not_served_from_the_bucket(front) -> None:
    via_nginx = httpx.get(front.nginx + tile_url(HIT), headers={"Range": "bytes=0-9"})
    direct = httpx.get(front.api + tile_url(HIT), headers={"Range": "bytes=0-9"})
    assert via_nginx.status_code == direct.status_code == 200
    assert via_nginx.content == direct.content


def test_a_miss_falls_through_to_the_api(front) -> None:
    r = httpx.get(front.nginx + tile_url(MISS), timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-tile-status"] == "pending"
    assert r.headers["x-cache"] == "MISS" and r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", f"/tiles/19/{HIT.x}/{HIT.y}.png?wait=-1"),
        ("GET", f"/tiles/19/0{HIT.x}/{HIT.y}.png"),
        ("GET", "/tiles/12/2417/2044.png"),
        ("POST", tile_url(HIT)),
        ("DELETE", tile_url(HIT)),
    ],
)
def test_other_requests_get_the_api_answers(front, method, path) -> None:
    via_nginx = httpx.request(method, front.nginx + path)
    direct = httpx.request(method, front.api + path)
    assert 400 <= direct.status_code < 500
    assert via_nginx.status_code == direct.status_code
    assert via_nginx.json() == direct.json()


def test_a_private_bucket_is_served_by_the_api(tmp_path, redis_server, seaweed) -> None:
    with running_front(tmp_path, redis_server.url, seaweed, PRIVATE) as front:
        before = hits_counted(front)
        via_nginx = httpx.get(front.nginx + tile_url(HIT))
        assert hits_counted(front) == before + 1, "nginx read a private bucket"
        assert via_nginx.status_code == 200
        assert via_nginx.content == stored_bytes(seaweed, PRIVATE, "front")
        assert via_nginx.headers["x-cache"] == "HIT"


def test_the_store_down_falls_back_to_the_api(tmp_path, front) -> None:
    settings = Settings(layers_file=front.data_dir.parent / "layers.yml", store="s3://b/p",
                        aws_endpoint_url=f"http://127.0.0.1:{free_port()}")  # fmt: skip
    port = free_port()
    api = front.api.removeprefix("http://")
    nginx = start_nginx(tmp_path / "nginx", render(settings, api, f"127.0.0.1:{port}"))
    try:
        wait_for(f"http://127.0.0.1:{port}/health", nginx, "nginx")
        r = httpx.get(f"http://127.0.0.1:{port}{tile_url(HIT)}")
        assert r.status_code == 200 and r.headers["x-cache"] == "HIT"
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)


def test_the_rendered_config_names_the_bucket() -> None:
    s3 = {"store": "s3://tiles/mapcascade/cache", "aws_region": "eu-north-1"}
    aws = render(Settings(**s3), "api:8000", "80")
    assert "server s3.eu-north-1.amazonaws.com:443;" in aws
    assert "proxy_pass https://mapcascade_store/tiles/mapcascade/cache/$mapcascade_folder/" in aws
    assert "proxy_set_header Host s3.eu-north-1.amazonaws.com;" in aws
    seaweed = render(Settings(**s3, aws_endpoint_url="http://localhost:8333"), "api:8000", "80",
                     store_url="http://seaweedfs:8333/")  # fmt: skip
    assert "server seaweedfs:8333;" in seaweed and "Host seaweedfs:8333;" in seaweed
    assert "proxy_pass http://mapcascade_store/tiles/mapcascade/cache/" in seaweed
    assert "try_files" not in seaweed and "root " not in seaweed
    with pytest.raises(ValueError):
        render(Settings(store="s3://"), "api:8000", "80")
    # A folder store: nginx reads the folder the API writes.
    assert "root /srv/tiles;" in render(Settings(store="file:///srv/tiles"), "api:8000", "80")
    assert "root /srv/other;" in render(Settings(store="/srv/other"), "api:8000", "80")
    with pytest.raises(ValueError):
        render(Settings(store="gs://tiles"), "api:8000", "80")
