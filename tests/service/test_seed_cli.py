"""`mapcascade seed | truncate` against a live uvicorn server on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from redis import Redis

from app.blockjob import SEEDS_KEY
from app.cli import main as cli
from app.main import create_app
from app.store import FileTileStore
from tests.service.test_seed import AREA, SEED_LAYER, all_blocks, png

BBOX = ",".join(map(str, AREA))
TOKEN = "cli-token"


@pytest.fixture
def settings(make_settings):
    return make_settings([SEED_LAYER], admin_token=TOKEN)


@pytest.fixture
def server(settings) -> Iterator[str]:
    """The API on a free loopback port, served by uvicorn in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(20)


def run(*args: str, token: str | None = TOKEN):
    env = {"MAPCASCADE_ADMIN_TOKEN": token} if token else {}
    return CliRunner().invoke(cli, list(args), env=env)


def fill_area(settings) -> None:
    store = FileTileStore(settings.tiles_dir)
    for block in all_blocks("seedarea", AREA, 19, 21):
        store.put_block(block, [png()] * 4, {"model": "test"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bbox", "1,2,3", "--zooms", "19"], "has 3 numbers; give four: W,S,E,N"),
        (["--bbox", "a,b,c,d", "--zooms", "19"], "is not four numbers W,S,E,N"),
        (["--bbox", BBOX, "--zooms", "19-x"], "is not a zoom (15) or a zoom range (14-17)"),
        (["--bbox", BBOX, "--zooms", "21-19"], "the first zoom must not exceed the second"),
        (["--zooms", "19"], "Missing option '--bbox'"),
    ],
)
@pytest.mark.parametrize("command", ["seed", "truncate"])
def test_malformed_arguments_exit_2_with_a_clear_message(command, args, message):
    result = run(command, *args, "--url", "http://127.0.0.1:9")
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_seed_of_a_finished_area_exits_0(server, settings):
    fill_area(settings)
    result = run("seed", f"--bbox={BBOX}", "--zooms", "19-21", "--url", server, "--interval", "0.1")
    assert result.exit_code == 0, result.output
    assert "21 tiles in 6 blocks of layer seedarea, zooms 19-21" in result.stdout
    assert "done: 21/21 tiles done (0 generated, 21 already there), 0 failed" in result.stdout


def test_seed_shows_progress_and_exits_1_when_cancelled(server, settings):
    redis = Redis.from_url(settings.redis_url)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def cancel_when_submitted() -> None:  # the operator cancelling from another terminal
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ids = [m.decode() for m in redis.zrange(SEEDS_KEY, 0, -1)]
            if ids:
                time.sleep(0.3)
                httpx.delete(f"{server}/seed/{ids[0]}", headers=auth)
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_submitted)
    canceller.start()
    result = run("seed", f"--bbox={BBOX}", "--zooms", "19-21", "--url", server, "--interval", "0.1")
    canceller.join()
    redis.close()
    assert result.exit_code == 1, result.output
    assert "cancelled: 0/21 tiles done" in result.stdout
    assert "tiles" in result.stderr  # the progress bar


def test_detach_prints_the_status_url(server):
    result = run("seed", f"--bbox={BBOX}", "--zooms", "20", "--url", server, "--detach")
    assert result.exit_code == 0, result.output
    status_url = result.stdout.strip().splitlines()[-1]
    assert status_url.startswith(f"{server}/seed/")
    assert httpx.get(status_url).json()["tiles"]["total"] == 4


def test_the_services_4xx_exits_2_with_its_message(server):
    result = run("seed", f"--bbox={BBOX}", "--zooms", "15-17", "--url", server)
    assert result.exit_code == 2
    assert "422: zooms 15-17 are outside layer 'seedarea', which has zooms 19-21" in result.output
    result = run("seed", f"--bbox={BBOX}", "--zooms", "19", "--url", server, "--token", "wrong")
    assert result.exit_code == 2
    assert "401: this call needs 'Authorization: Bearer <MAPCASCADE_ADMIN_TOKEN>'" in result.output


def test_an_unreachable_service_exits_1(settings):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("seed", f"--bbox={BBOX}", "--zooms", "19", "--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert f"cannot reach http://127.0.0.1:{port}" in result.output


def test_truncate_prints_the_count_removed(server, settings):
    fill_area(settings)
    result = run("truncate", f"--bbox={BBOX}", "--zooms", "20-21", "--url", server)
    assert result.exit_code == 0, result.output
    assert "removed 20 tiles (5 blocks) of layer seedarea, zooms 20-21" in result.stdout
    assert FileTileStore(settings.tiles_dir).root.joinpath("seedarea", "19").is_dir()
