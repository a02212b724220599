"""End to end: `mapcascade export --seed` generates an area with a real worker (tiny model)
through a live API, exports it to both formats, and the archives served back as layers give
the stored tiles byte for byte."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient
from redis import Redis

from app.cli import main as cli
from app.main import create_app
from app.store import FileTileStore
from tests.service.test_export import AREA_TILES, BBOX, LAYER, mbtiles_tiles, pmtiles_tiles, stored
from tests.service.test_seed import LOOPBACK
from tests.service.test_seed_cli import server  # noqa: F401 - the live API fixture

pytestmark = pytest.mark.slow
TOKEN = "cli-token"  # the token the `server` fixture's settings carry


@pytest.fixture
def settings(make_settings):
    return make_settings([LAYER], admin_token=TOKEN)


def export(settings, *args: str):
    env = {"MAPCASCADE_DATA_DIR": str(settings.data_dir),
           "MAPCASCADE_LAYERS_FILE": str(settings.layers_file)}  # fmt: skip
    return CliRunner().invoke(cli, ["export", "--layer", "seedarea", "--bbox", BBOX, *args],
                              env=env)  # fmt: skip


def test_export_seed_generates_exports_and_serves_back_the_same_tiles(
    server,  # noqa: F811
    settings,
    workers,
    tmp_path,
):
    store = FileTileStore(settings.tiles_dir)
    redis = Redis.from_url(settings.redis_url)
    workers.start(settings)
    workers.wait_ready(redis, 1)
    redis.close()

    mb = tmp_path / "area.mbtiles"
    result = export(settings, "--zooms", "19-21", "--seed", "--url", server, "--token", TOKEN,
                    "--interval", "0.2", str(mb))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "21 tiles in 6 blocks of layer seedarea" in result.stdout  # the seed's own lines
    assert "done: 21/21 tiles done (21 generated, 0 already there), 0 failed" in result.stdout
    assert "exported 21 tiles of layer seedarea" in result.stdout
    assert "not generated yet" not in result.stderr

    pm = tmp_path / "area.pmtiles"
    result = export(settings, "--zooms", "19-21", str(pm))  # all there now: no seed needed
    assert result.exit_code == 0, result.output

    tiles = stored(store)
    assert len(tiles) == len(AREA_TILES) == 21
    assert mbtiles_tiles(mb) == tiles
    assert pmtiles_tiles(pm) == tiles

    layers = [LAYER, {"name": "mb", "source": {"type": "mbtiles", "path": str(mb)}},
              {"name": "pm", "source": {"type": "pmtiles", "path": str(pm)}}]  # fmt: skip
    served = with_layers(settings, layers, tmp_path)
    with TestClient(create_app(served), client=LOOPBACK) as client:
        for name in ("mb", "pm"):
            for tile, data in tiles.items():
                r = client.get(f"/tiles/{name}/{tile.z}/{tile.x}/{tile.y}.png")
                assert r.status_code == 200 and r.content == data, (name, tile)


def with_layers(settings, layers, tmp_path):
    path = tmp_path / "archive-layers.yml"
    path.write_text(yaml.safe_dump({"layers": layers}))
    return type(settings)(**{**settings.model_dump(), "layers_file": path})
