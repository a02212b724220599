"""The nginx front (deploy/nginx/) with Debian's nginx before a live `mapcascade api`: hits come
from the files with the API's bytes and headers, everything else reaches the API unchanged."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image
from redis import Redis

from app.blockjob import EVENTS_CHANNEL, client_key
from app.cli.nginx import cors_entries, render, tile_regex
from app.embedded import EmbeddedRedis
from app.settings import Settings
from app.store import FileTileStore
from app.tiles import Block, Tile
from tests.browser.live_service import free_port
from tests.conftest import KAMPALA_LAYER, ROOT

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light)"
)

# Two generated layers over the Kampala fixture: `front` is the default (/tiles/{z}/{x}/{y}.png).
FRONT = {**KAMPALA_LAYER, "name": "front"}
OTHER = {**KAMPALA_LAYER, "name": "other"}
BLOCK = Block("front", 18, 154803, 130818)  # its four z19 children are stored
HIT = BLOCK.children[0]
MISS = Tile(HIT.x * 2, HIT.y * 2, 20)  # inside the layer, not generated: pending via the API
# Headers a client may read on a tile; they must be equal through nginx and from the API.
TILE_HEADERS = (
    "content-type", "content-length", "etag", "last-modified", "cache-control", "x-cache",
    "x-tile-status", "vary", "access-control-allow-origin", "access-control-expose-headers",
    "accept-ranges", "retry-after",
)  # fmt: skip


@dataclass
class Front:
    nginx: str  # base URL through nginx
    api: str  # the same API, directly
    data_dir: Path
    redis: Redis


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(buf, format="PNG")
    return buf.getvalue()


def wait_for(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{what} did not answer in 60 s"
        time.sleep(0.2)


def nginx_main_conf(root: Path, include: Path) -> str:
    # Under root nginx's workers would run as nobody, who cannot read pytest's 0700 folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(f"{kind}_temp_path {root}/tmp;\n" for kind in
                   ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    return (
        f"{user}worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log warn;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{\naccess_log off;\n{temp}include {include};\n}}\n"
    )


def start_nginx(conf: Path, rendered: str) -> subprocess.Popen:
    (conf / "tmp").mkdir(parents=True)
    (conf / "mapcascade.conf").write_text(rendered)
    (conf / "nginx.conf").write_text(nginx_main_conf(conf, conf / "mapcascade.conf"))
    args = [NGINX, "-p", str(conf), "-c", str(conf / "nginx.conf"), "-e", "stderr",
            "-g", "daemon off;"]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def running_front(tmp: Path, redis_url: str, cors_origins: list[str]) -> Iterator[Front]:
    """Two layers with one stored block each, `mapcascade api` on them, nginx in front."""
    layers = tmp / "layers.yml"
    layers.write_text(yaml.safe_dump({"layers": [FRONT, OTHER]}))
    data_dir = tmp / "data"
    store = FileTileStore(data_dir / "tiles")
    tiles = [png((40 * i, 120, 200)) for i in range(4)]
    store.put_block(BLOCK, tiles, {"model": "test"})
    store.put_block(Block("other", BLOCK.z, BLOCK.x, BLOCK.y), tiles[::-1], {"model": "test"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPCASCADE_")}
    env.update(
        MAPCASCADE_REDIS_URL=redis_url,
        MAPCASCADE_DATA_DIR=str(data_dir),
        MAPCASCADE_LAYERS_FILE=str(layers),
        MAPCASCADE_CORS_ORIGINS=json.dumps(cors_origins),
        MAPCASCADE_TRUSTED_PROXIES='["127.0.0.1"]',  # nginx's address, as in the compose file
        MAPCASCADE_WAIT_MAX="0.2",  # no worker runs: a miss answers its interim tile at once
    )
    settings = Settings(redis_url=redis_url, data_dir=data_dir, layers_file=layers,
                        cors_origins=cors_origins)  # fmt: skip
    with api_behind_nginx(tmp, env, settings) as front:
        yield front


@contextlib.contextmanager
def api_behind_nginx(tmp: Path, env: dict[str, str], settings: Settings) -> Iterator[Front]:
    """`mapcascade api` with this environment, and Debian's nginx in front of it with the config
    `mapcascade nginx-config` renders from the same settings; both stopped afterwards."""
    api_port, nginx_port = free_port(), free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "api", "--port", str(api_port)], env=env, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    nginx = None
    redis = Redis.from_url(settings.redis_url)
    try:
        wait_for(f"http://127.0.0.1:{api_port}/health", api, "mapcascade api")
        rendered = render(settings, f"127.0.0.1:{api_port}", f"127.0.0.1:{nginx_port}")
        nginx = start_nginx(tmp / "nginx", rendered)
        wait_for(f"http://127.0.0.1:{nginx_port}/health", nginx, "nginx")
        yield Front(f"http://127.0.0.1:{nginx_port}", f"http://127.0.0.1:{api_port}",
                    settings.data_dir, redis)  # fmt: skip
    finally:
        redis.close()
        for proc in (nginx, api):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)


@pytest.fixture(scope="module")
def front(tmp_path_factory, redis_server: EmbeddedRedis) -> Iterator[Front]:
    with running_front(tmp_path_factory.mktemp("front"), redis_server.url, ["*"]) as f:
        yield f


def hits_counted(front: Front) -> int:
    """Cache hits the API answered itself (its one process's Prometheus counter)."""
    text = httpx.get(front.api + "/metrics").text
    m = re.search(r'^mapcascade_tile_cache_total\{result="hit"\} ([0-9.]+)$', text, re.M)
    return int(float(m.group(1))) if m else 0


def both(front: Front, method: str, path: str, **kw) -> tuple[httpx.Response, httpx.Response]:
    via_nginx = httpx.request(method, front.nginx + path, timeout=10, **kw)
    direct = httpx.request(method, front.api + path, timeout=10, **kw)
    return via_nginx, direct


def tile_headers(r: httpx.Response) -> dict[str, str | None]:
    return {h: r.headers.get(h) for h in TILE_HEADERS}


def tile_url(tile: Tile, layer: str | None = None) -> str:
    return f"/tiles/{layer + '/' if layer else ''}{tile.z}/{tile.x}/{tile.y}.png"


@pytest.mark.parametrize("layer", [None, "other"], ids=["default-layer", "named-layer"])
@pytest.mark.parametrize("origin", [None, "https://maps.example.org"], ids=["no-origin", "cors"])
def test_a_hit_is_served_by_nginx_with_the_api_bytes_and_headers(front, layer, origin) -> None:
    stored = front.data_dir / "tiles" / (layer or "front") / "19" / str(HIT.x) / f"{HIT.y}.png"
    headers = {"Origin": origin} if origin else {}
    before = hits_counted(front)
    via_nginx = httpx.get(front.nginx + tile_url(HIT, layer), headers=headers)
    assert hits_counted(front) == before, "the hit reached the API"
    direct = httpx.get(front.api + tile_url(HIT, layer), headers=headers)
    assert hits_counted(front) == before + 1
    assert via_nginx.status_code == direct.status_code == 200
    assert via_nginx.content == direct.content == stored.read_bytes()
    assert tile_headers(via_nginx) == tile_headers(direct)
    assert via_nginx.headers["content-type"] == "image/png"
    assert via_nginx.headers["x-cache"] == "HIT"
    assert via_nginx.headers["cache-control"] == "public, max-age=86400"
    if origin:
        assert via_nginx.headers["access-control-allow-origin"] == "*"
        assert "ETag" in via_nginx.headers["access-control-expose-headers"]
    else:
        assert "access-control-allow-origin" not in via_nginx.headers


def assert_same_304s(front) -> None:
    """Conditional requests get the API's answers through nginx, which never asks the API."""
    first = httpx.get(front.nginx + tile_url(HIT))
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag == httpx.get(front.api + tile_url(HIT)).headers["etag"]
    before = hits_counted(front)
    for conditional, status in [
        ({"If-None-Match": etag}, 304),
        ({"If-None-Match": f"W/{etag}"}, 304),
        ({"If-None-Match": '"0-0"'}, 200),
        ({"If-Modified-Since": modified}, 304),
        ({"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}, 200),
    ]:
        via_nginx = httpx.get(front.nginx + tile_url(HIT), headers=conditional)
        assert hits_counted(front) == before, conditional
        direct = httpx.get(front.api + tile_url(HIT), headers=conditional)
        before += 1
        assert via_nginx.status_code == direct.status_code == status, conditional
        assert via_nginx.headers["etag"] == direct.headers["etag"] == etag
        assert via_nginx.headers["cache-control"] == direct.headers["cache-control"]
        assert via_nginx.headers["x-cache"] == "HIT"
        assert (via_nginx.content == b"") == (status == 304)


def test_etag_and_dates_give_the_same_304s(front) -> None:
    assert_same_304s(front)


def test_head_answers_the_same_headers_without_a_body(front) -> None:
    via_nginx, direct = both(front, "HEAD", tile_url(HIT))
    assert via_nginx.status_code == direct.status_code == 200
    assert via_nginx.content == direct.content == b""
    assert tile_headers(via_nginx) == tile_headers(direct)


def test_a_miss_falls_through_to_the_api_and_gets_the_interim_tile(front) -> None:
    r = httpx.get(front.nginx + tile_url(MISS), timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-tile-status"] == "pending"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-cache"] == "MISS"
    # The interim tile is the stored parent's quadrant, upsampled: the parent's flat colour.
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (256, 256)
        assert im.convert("RGB").getpixel((128, 128)) == (0, 120, 200)


@pytest.mark.parametrize(
    "path",
    [
        f"/tiles/19/{2**19}/{HIT.y}.png",  # x outside 0..2^z-1
        "/tiles/30/1/1.png",  # no such zoom
        "/tiles/12/2417/2044.png",  # a zoom outside the layer
        f"/tiles/19/0{HIT.x}/{HIT.y}.png",  # a stored tile, not written as a tile number
        f"/tiles/19/+{HIT.x}/{HIT.y}.png",
        f"/tiles/19/{HIT.x}/{HIT.y}.0.png",
        f"/tiles/19/{HIT.x}/{HIT.y}.jpg",  # a stored tile in another format
        f"/tiles/19/{HIT.x}/{HIT.y}.PNG",
        f"/tiles//19/{HIT.x}/{HIT.y}.png",  # nginx would merge the slashes and find the file
        f"/tiles/nolayer/19/{HIT.x}/{HIT.y}.png",
        f"/tiles/abc/{HIT.x}/{HIT.y}.png",
        f"/tiles/19/{HIT.x}/{HIT.y}.png?wait=-1",  # a stored tile, an invalid parameter
        f"/tiles/19/{HIT.x}/{HIT.y}.png?wait=soon",
    ],
)
def test_bad_tile_requests_get_the_api_json_errors(front, path) -> None:
    via_nginx, direct = both(front, "GET", path)
    assert 400 <= direct.status_code < 500, (path, direct.status_code)
    assert via_nginx.status_code == direct.status_code, path
    assert via_nginx.headers["content-type"] == "application/json"
    assert via_nginx.json() == direct.json()
    assert via_nginx.headers["cache-control"] == "no-store"


def test_the_default_layer_is_served_under_its_name_too(front) -> None:
    before = hits_counted(front)
    via_nginx = httpx.get(front.nginx + tile_url(HIT, "front"))
    assert hits_counted(front) == before
    direct = httpx.get(front.api + tile_url(HIT, "front"))
    assert via_nginx.status_code == direct.status_code == 200
    assert via_nginx.content == direct.content == httpx.get(front.api + tile_url(HIT)).content
    assert tile_headers(via_nginx) == tile_headers(direct)


def test_a_cors_preflight_and_other_methods_reach_the_api(front) -> None:
    preflight = {"Origin": "https://maps.example.org", "Access-Control-Request-Method": "GET"}
    via_nginx, direct = both(front, "OPTIONS", tile_url(HIT), headers=preflight)
    assert via_nginx.status_code == direct.status_code == 200
    for h in ("access-control-allow-origin", "access-control-allow-methods", "vary"):
        assert via_nginx.headers.get(h) == direct.headers.get(h), h
    via_nginx, direct = both(front, "POST", tile_url(HIT))
    assert via_nginx.status_code == direct.status_code == 405
    assert via_nginx.json() == direct.json()


def test_tilejson_names_the_address_the_client_used(front) -> None:
    tj = httpx.get(front.nginx + "/tiles.json").json()
    assert tj["tiles"] == [front.nginx + "/tiles/{z}/{x}/{y}.png"]
    tj = httpx.get(front.nginx + "/other/tiles.json").json()
    assert tj["tiles"] == [front.nginx + "/tiles/other/{z}/{x}/{y}.png"]


def test_events_stream_through_unbuffered(front) -> None:
    event = {"layer": "front", "block": [18, BLOCK.x, BLOCK.y]}
    with httpx.stream("GET", front.nginx + "/events", timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        chunks = r.iter_text()
        assert ": connected" in next(chunks)  # at once, not when a buffer fills
        t0 = time.monotonic()
        front.redis.publish(EVENTS_CHANNEL, json.dumps(event))
        text = ""
        while "event: block" not in text:
            text += next(chunks)
        assert time.monotonic() - t0 < 5
        assert json.loads(text.split("data: ", 1)[1].split("\n", 1)[0]) == event


def test_a_forged_forwarded_for_does_not_reach_the_api(front) -> None:
    """nginx is the edge: it sends the API the address it saw, whatever the client claims, and
    the API charges the miss to that address (it trusts nginx: MAPCASCADE_TRUSTED_PROXIES)."""
    forged = {"X-Forwarded-For": "203.0.113.9"}
    r = httpx.get(front.nginx + tile_url(Tile(MISS.x + 1, MISS.y, 20)), headers=forged)
    assert r.headers["x-tile-status"] == "pending"
    assert front.redis.exists(client_key("127.0.0.1"))
    assert not front.redis.exists(client_key("203.0.113.9"))
    # The API itself does believe a trusted proxy's header (so behind nginx, clients differ).
    httpx.get(front.api + tile_url(Tile(MISS.x + 2, MISS.y, 20)), headers=forged)
    assert front.redis.exists(client_key("203.0.113.9"))


def test_listed_cors_origins_are_answered_alike(tmp_path, redis_server) -> None:
    listed = ["https://maps.example.org", "https://other.example.org"]
    with running_front(tmp_path, redis_server.url, listed) as front:
        for origin in [*listed, "https://evil.example.com", None]:
            headers = {"Origin": origin} if origin else {}
            via_nginx, direct = both(front, "GET", tile_url(HIT), headers=headers)
            assert via_nginx.status_code == direct.status_code == 200
            assert tile_headers(via_nginx) == tile_headers(direct), origin
            allowed = via_nginx.headers.get("access-control-allow-origin")
            assert allowed == (origin if origin in listed else None)


def test_the_api_down_gives_a_json_503_not_an_nginx_page(tmp_path, front) -> None:
    settings = Settings(data_dir=front.data_dir, layers_file=front.data_dir.parent / "layers.yml")
    port = free_port()
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    nginx = start_nginx(tmp_path / "nginx", render(settings, closed, f"127.0.0.1:{port}"))
    try:
        wait_for(f"http://127.0.0.1:{port}/", nginx, "nginx")
        for path in ("/tiles.json", tile_url(MISS)):
            r = httpx.get(f"http://127.0.0.1:{port}{path}")
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.headers["content-type"] == "application/json"
            assert r.json()["status"] == 503 and r.headers["cache-control"] == "no-store"
        assert httpx.get(f"http://127.0.0.1:{port}{tile_url(HIT)}").status_code == 200
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)


def test_the_rendered_config_follows_the_settings(tmp_path) -> None:
    assert cors_entries(["*"]) == '    "~." "*";'
    listed = cors_entries(["https://a.example", "https://b.example"])
    assert '"https://a.example" "https://a.example";' in listed and "~." not in listed
    with pytest.raises(ValueError):
        cors_entries(['https://a.example"; evil'])
    regex = re.compile(tile_regex(["a", "b-2"], "a").replace("?<", "?P<"))
    assert regex.match("/tiles/1/0/0.png")["mapcascade_layer"] is None
    assert regex.match("/tiles/b-2/1/0/0.png")["mapcascade_layer"] == "b-2"
    for path in ("/tiles/c/1/0/0.png", "/tiles/1/00/0.png", "/tiles/1/0/0.png/", "/tiles/1/0.png"):
        assert regex.match(path) is None, path
    only_named = re.compile(tile_regex(["b"], None).replace("?<", "?P<"))
    assert only_named.match("/tiles/1/0/0.png") is None
    assert re.compile(tile_regex([], None)).match("/tiles/1/0/0.png") is None
