"""POST /export, GET /export/{id} and its file, through the ASGI app on a real Redis and store."""

from __future__ import annotations

import sqlite3
import time

import pytest
from fastapi.testclient import TestClient
from pmtiles.reader import MemorySource, all_tiles

from app.main import create_app
from app.store import FileTileStore
from app.tiles import Tile
from tests.service.test_export import LAYER, fill, stored
from tests.service.test_seed import AREA

TOKEN = "export-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY = {"layer": "seedarea", "bbox": AREA, "minzoom": 19, "maxzoom": 21, "format": "pmtiles"}


@pytest.fixture
def settings(make_settings):
    return make_settings([LAYER], admin_token=TOKEN, max_export_tiles=100)


def wait_done(client: TestClient, status_url: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(status_url, headers=AUTH).json()
        if status["state"] != "running" or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


@pytest.mark.parametrize("fmt", ["mbtiles", "pmtiles"])
def test_a_completed_export_is_downloaded_and_equals_the_store(client, store, settings, fmt):
    fill(store)
    r = client.post("/export", json={**BODY, "format": fmt}, headers=AUTH)
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["state"] == "running"
    assert created["tiles"] == {"done": 0, "total": 21, "missing": 0}
    assert r.headers["location"] == created["status_url"]
    assert created["status_url"] == f"http://testserver/export/{created['id']}"

    status = wait_done(client, created["status_url"])
    assert status["state"] == "done", status
    assert status["tiles"]["done"] == 21 and status["progress"] == 1.0
    assert (status["minzoom"], status["maxzoom"]) == (19, 21) and status["format"] == fmt
    assert status["download_url"] == created["status_url"] + "/file"

    download = client.get(status["download_url"], headers=AUTH)
    assert download.status_code == 200
    assert len(download.content) == status["bytes"]
    assert f'filename="seedarea-z19-21.{fmt}"' in download.headers["content-disposition"]
    if fmt == "pmtiles":
        assert download.headers["content-type"] == "application/vnd.pmtiles"
        got = {
            Tile(x, y, z): bytes(d) for (z, x, y), d in all_tiles(MemorySource(download.content))
        }
    else:
        assert download.headers["content-type"] == "application/vnd.sqlite3"
        path = settings.data_dir / "downloaded.mbtiles"
        path.write_bytes(download.content)
        with sqlite3.connect(path) as con:
            rows = con.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")
            got = {Tile(x, (1 << z) - 1 - y, z): bytes(d) for z, x, y, d in rows}
    assert got == stored(store)
    # Only the finished file is under the data dir's exports folder: no temp file left.
    assert sorted(p.name for p in (settings.data_dir / "exports").iterdir()) == [
        f"{created['id']}.{fmt}"
    ]


def test_missing_tiles_are_counted(client, store):
    fill(store, zooms=range(19, 21))
    r = client.post("/export", json=BODY, headers=AUTH)
    assert r.status_code == 202, r.text
    assert r.json()["tiles"] == {"done": 0, "total": 5, "missing": 16}
    assert wait_done(client, r.json()["status_url"])["state"] == "done"


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"Authorization": "Bearer wrong"}, 401)]
)
def test_every_export_call_needs_the_admin_token(client, store, headers, status):
    fill(store)
    assert client.post("/export", json=BODY, headers=headers).status_code == status
    created = client.post("/export", json=BODY, headers=AUTH).json()
    done = wait_done(client, created["status_url"])
    for url in (done["status_url"], done["download_url"]):
        r = client.get(url, headers=headers)
        assert r.status_code == status
        assert r.headers["www-authenticate"] == "Bearer"


def test_without_a_token_exports_are_refused_off_loopback(make_settings):
    spoofed = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}
    with TestClient(create_app(make_settings([LAYER]))) as c:  # testclient: not loopback
        for headers in ({}, spoofed):
            r = c.post("/export", json=BODY, headers=headers)
            assert r.status_code == 403
            assert "admin calls are accepted from loopback only" in r.json()["error"]
            assert c.get("/export/0123456789abcdef", headers=headers).status_code == 403


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**BODY, "bbox": AREA[:3]}, "bbox must be 4 numbers"),
        ({**BODY, "bbox": ["a", 1, 2, 3]}, "bbox.0: Input should be a valid number"),
        ({**BODY, "minzoom": "a"}, "minzoom: Input should be a valid integer"),
        ({**BODY, "minzoom": 21, "maxzoom": 19}, "minzoom (21) must not exceed maxzoom (19)"),
        ({**BODY, "maxzoom": 99}, "maxzoom: Input should be less than or equal to 30"),
        ({**BODY, "minzoom": -1}, "minzoom: Input should be greater than or equal to 0"),
        ({**BODY, "zooms": "19-21"}, "zooms: Extra inputs are not permitted"),
        ({**BODY, "format": "tiff"}, "format: Input should be 'mbtiles' or 'pmtiles'"),
        ({**BODY, "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({k: v for k, v in BODY.items() if k != "bbox"}, "bbox: Field required"),
        ({**BODY, "maxzoom": 23}, "zooms 19-23 are outside layer 'seedarea'"),
        ({**BODY, "bbox": [10, 10, 11, 11]}, "does not intersect layer 'seedarea'"),
        ({**BODY, "bbox": [32.6, 0.3, 32.5, 0.4]}, "west (32.6) must be less than east"),
        ({**BODY, "bbox": [0, 0, 1, 99]}, "latitudes must be within"),
    ],
)
def test_malformed_and_out_of_range_bodies_are_422(client, body, message):
    r = client.post("/export", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]
    assert r.headers["cache-control"] == "no-store"


def test_broken_json_is_422(client):
    r = client.post(
        "/export", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["status"] == 422


def test_an_unknown_layer_is_404(client):
    r = client.post("/export", json={**BODY, "layer": "nope"}, headers=AUTH)
    assert r.status_code == 404
    assert r.json()["error"] == "unknown layer 'nope'"


def test_an_oversize_area_is_422_with_the_count_and_limit(make_settings):
    settings = make_settings([LAYER], admin_token=TOKEN, max_export_tiles=20)
    with TestClient(create_app(settings)) as c:
        r = c.post("/export", json=BODY, headers=AUTH)
    assert r.status_code == 422
    body = r.json()
    assert (body["tiles"], body["limit"]) == (21, 20)
    assert "over the limit of 20 tiles per export (MAPCASCADE_MAX_EXPORT_TILES)" in body["error"]


def test_an_empty_area_is_refused_at_once(client, settings):
    r = client.post("/export", json=BODY, headers=AUTH)
    assert r.status_code == 422
    assert "no stored tile of layer 'seedarea'" in r.json()["error"]
    assert not (settings.data_dir / "exports").exists()


def test_beyond_the_concurrent_exports_limit_is_429(make_settings):
    settings = make_settings([LAYER], admin_token=TOKEN, max_concurrent_exports=0)
    fill(FileTileStore(settings.tiles_dir))
    with TestClient(create_app(settings)) as c:
        r = c.post("/export", json=BODY, headers=AUTH)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "10"
    assert "MAPCASCADE_MAX_CONCURRENT_EXPORTS" in r.json()["error"]


def test_unknown_exports_are_404(client):
    for url in ("/export/0123456789abcdef", "/export/0123456789abcdef/file", "/export/../x"):
        r = client.get(url, headers=AUTH)
        assert r.status_code == 404, url


def test_a_failed_export_says_why_and_has_no_file(client, store, settings):
    fill(store)
    (settings.data_dir / "exports").write_bytes(b"a file where the exports folder goes")
    created = client.post("/export", json=BODY, headers=AUTH).json()
    status = wait_done(client, created["status_url"])
    assert status["state"] == "failed"
    assert "cannot create the exports folder" in status["error"]
    assert "download_url" not in status
    r = client.get(created["status_url"] + "/file", headers=AUTH)
    assert r.status_code == 404
    assert "is failed: there is no file to download" in r.json()["error"]
