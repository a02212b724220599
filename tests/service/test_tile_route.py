"""The tile routes' plain-URL shortcut (app.routes.tiles.TileRoute): the same answers as the
validated handler, and the same OpenAPI document."""

from __future__ import annotations

import pytest

from tests.conftest import KAMPALA_LAYER
from tests.service.test_api import TILE, URL, put_block_of


@pytest.fixture
def settings(make_settings):
    return make_settings([KAMPALA_LAYER], wait_default=0.0)


def test_a_plain_hit_answers_as_the_validated_handler(client, store) -> None:
    put_block_of(store, TILE)
    plain = client.get(URL)
    validated = client.get(URL + "?wait=0")  # ?wait= takes FastAPI's handler
    assert plain.status_code == validated.status_code == 200
    assert plain.content == validated.content
    assert dict(plain.headers) == dict(validated.headers)
    named = client.get(f"/tiles/kampala/{TILE.z}/{TILE.x}/{TILE.y}.png")
    assert named.content == plain.content and named.headers["x-cache"] == "HIT"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/tiles/{TILE.z}/-1/{TILE.y}.png", 404),  # not plain: validated, out of range
        (f"/tiles/{TILE.z}/{TILE.x}/{TILE.y}.png?wait=-1", 422),
        (f"/tiles/{TILE.z}/{TILE.x}/{TILE.y}.png?wait=x", 422),
        (f"/tiles/{TILE.z}/{2**TILE.z}/{TILE.y}.png", 404),  # plain, out of range
        (f"/tiles/{TILE.z}/{TILE.x}/{TILE.y}.webp", 415),
        (f"/tiles/nolayer/{TILE.z}/{TILE.x}/{TILE.y}.png", 404),
        (f"/tiles/{TILE.z}/{'9' * 11}/{TILE.y}.png", 404),  # too long to be plain
    ],
)
def test_errors_are_the_api_json_either_way(client, store, path, status) -> None:
    put_block_of(store, TILE)
    r = client.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"


def test_the_openapi_document_still_describes_the_tile_parameters(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, names in [
        ("/tiles/{z}/{x}/{y}.{fmt}", {"z", "x", "y", "fmt", "wait"}),
        ("/tiles/{layer}/{z}/{x}/{y}.{fmt}", {"layer", "z", "x", "y", "fmt", "wait"}),
    ]:
        params = {p["name"]: p for p in paths[path]["get"]["parameters"]}
        assert set(params) == names, path
        assert params["z"]["schema"]["type"] == "integer"
        assert params["wait"]["in"] == "query"
        assert "image/png" in paths[path]["get"]["responses"]["200"]["content"]
