"""XYZ tile services against a local scripted server: pixels, retries, deadlines, no data."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from imagery_fixtures import KAMPALA, TileServer, stitch_pngs
from PIL import Image

from app.imagery_config import XYZImageryConfig, parse_imagery_config
from worker.imagery import ImageryError, open_source
from worker.imagery.xyz import USER_AGENT, XYZSource, tile_url

BLOCK = (21, 1238424, 1046544)
FIRST = "/21/1238424/1046544.png"


def xyz(server: TileServer, url: str = "/{z}/{x}/{y}.png", **extra: Any) -> XYZSource:
    settings = {"type": "xyz", "url": server.base_url + url, "backoff": 0.01, **extra}
    source = open_source(parse_imagery_config(settings))
    assert isinstance(source, XYZSource)
    return source


def test_block_equals_stitched_pngs(tile_server: TileServer) -> None:
    mosaic = xyz(tile_server).read(*BLOCK)
    rgb, mask = stitch_pngs(KAMPALA, 21, range(1238424, 1238426), range(1046544, 1046546))
    np.testing.assert_array_equal(mosaic.mask, mask)
    np.testing.assert_array_equal(mosaic.rgb[mask], rgb[mask])
    assert mosaic.overzoom == 0
    assert sum(tile_server.requests.values()) == 4
    assert set(tile_server.user_agents) == {USER_AGENT}
    assert USER_AGENT.startswith("mapcascade/")


def test_404_is_no_data(tile_server: TileServer) -> None:
    # Only the north-west tile exists; the three others answer 404 (and one 204).
    tile_server.script["/21/1238426/1046546.png"] = [204]
    mosaic = xyz(tile_server).read(21, 1238425, 1046545)
    rgb, mask = stitch_pngs(KAMPALA, 21, range(1238425, 1238427), range(1046545, 1046547))
    np.testing.assert_array_equal(mosaic.mask, mask)
    np.testing.assert_array_equal(mosaic.rgb[mask], rgb[mask])
    assert not mosaic.mask[256:].any()
    assert sum(tile_server.requests.values()) == 4, "no retries on 404/204"
    assert xyz(tile_server).read(21, 0, 0).empty


def test_tms_rows_and_custom_headers(tile_server: TileServer, tmp_path_factory: Any) -> None:
    # Serve the fixture tiles under TMS row numbers and read them back through {-y}.
    root = tmp_path_factory.mktemp("tms")
    for png in KAMPALA.glob("*/*/*.png"):
        z, x, y = int(png.parts[-3]), int(png.parts[-2]), int(png.stem)
        target = root / str(z) / str(x) / f"{(1 << z) - 1 - y}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png.read_bytes())
    tile_server.root = root
    source = xyz(tile_server, "/{z}/{x}/{-y}.png", headers={"X-Api-Key": "k"})
    mosaic = source.read(*BLOCK)
    _, mask = stitch_pngs(KAMPALA, 21, range(1238424, 1238426), range(1046544, 1046546))
    np.testing.assert_array_equal(mosaic.mask, mask)
    assert all(h.get("X-Api-Key") == "k" for h in tile_server.headers)


def test_subdomains_rotate() -> None:
    config = XYZImageryConfig(
        type="xyz", url="https://{s}.tiles.example/{z}/{x}/{y}.png", subdomains=["a", "b", "c"]
    )
    urls = {tile_url(config, 3, x, y) for x in range(2) for y in range(2)}
    assert {u.split(".")[0] for u in urls} == {"https://a", "https://b", "https://c"}
    assert tile_url(config, 3, 1, 2) == "https://a.tiles.example/3/1/2.png"
    assert tile_url(config, 3, 1, 2, attempt=1) == "https://b.tiles.example/3/1/2.png"
    assert tile_url(config.model_copy(update={"url": "https://{s}.t/{z}/{x}/{-y}"}), 3, 1, 2) == (
        "https://a.t/3/1/5"
    )


def test_two_500s_then_success(tile_server: TileServer) -> None:
    tile_server.script[FIRST] = [500, 503]
    mosaic = xyz(tile_server, retries=2).read(*BLOCK)
    assert tile_server.requests[FIRST] == 3
    assert mosaic.mask[:256, :256].mean() > 0.9


def test_429_is_retried(tile_server: TileServer) -> None:
    tile_server.script[FIRST] = [429]
    xyz(tile_server, retries=1).read(*BLOCK)
    assert tile_server.requests[FIRST] == 2


def test_always_500_is_an_imagery_error(tile_server: TileServer) -> None:
    tile_server.script[FIRST] = [500] * 10
    with pytest.raises(ImageryError) as error:
        xyz(tile_server, retries=2).read(*BLOCK)
    assert tile_server.requests[FIRST] == 3, "first attempt + 2 retries"
    message = str(error.value)
    assert f"{tile_server.base_url}{FIRST}" in message and "HTTP 500" in message
    assert "3 attempt(s)" in message


def test_403_fails_at_once(tile_server: TileServer) -> None:
    tile_server.script[FIRST] = [403] * 10
    with pytest.raises(ImageryError, match="answered HTTP 403"):
        xyz(tile_server, retries=3).read(*BLOCK)
    assert tile_server.requests[FIRST] == 1, "a refusal is not retried"


def test_garbage_body_is_an_imagery_error(tile_server: TileServer, tmp_path: Any) -> None:
    (tmp_path / "1" / "0").mkdir(parents=True)
    (tmp_path / "1" / "0" / "0.png").write_bytes(b"<html>quota exceeded</html>")
    tile_server.root = tmp_path
    with pytest.raises(ImageryError, match="undecodable"):
        xyz(tile_server).read(1, 0, 0, width=1, height=1)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [(("sleep", 30), "ReadTimeout"), ("trickle", "no complete answer within 0.6 s")],
    ids=["silent", "trickling"],
)
def test_hung_server_is_bounded(
    tile_server: TileServer, timer: Callable[[], float], answer: object, problem: str
) -> None:
    # connect + read = 0.6 s per attempt; a trickling server never trips httpx's per-read
    # timeout (a byte every 0.2 s), only the per-attempt deadline.
    tile_server.script[FIRST] = [answer] * 10
    source = xyz(tile_server, timeout={"connect": 0.3, "read": 0.3}, retries=1, backoff=0.05)
    with pytest.raises(ImageryError, match=problem):
        source.read(*BLOCK)
    elapsed = timer()
    # 2 attempts x 0.6 s + at most 0.05 s backoff, plus 1 s for the test server and scheduling.
    assert elapsed < 0.6 * 2 + 0.05 + 1.0, f"took {elapsed:.2f} s"
    assert tile_server.requests[FIRST] == 2


def test_refused_connection_is_retried_then_an_imagery_error(tile_server: TileServer) -> None:
    source = xyz(tile_server, retries=1)
    source.config = source.config.model_copy(update={"url": "http://127.0.0.1:9/{z}/{x}/{y}.png"})
    with pytest.raises(
        ImageryError, match=r"127\.0\.0\.1:9/21/.*2 attempt\(s\), last: ConnectError"
    ):
        source.read(*BLOCK)


def test_concurrency_is_bounded(tile_server: TileServer, timer: Callable[[], float]) -> None:
    # Four tiles that each take 0.3 s: one at a time -> >= 1.2 s; four at a time -> ~0.3 s.
    tile_server.script["*"] = [("sleep", 0.3)] * 8
    xyz(tile_server, concurrency=1).read(*BLOCK)
    serial = timer()
    xyz(tile_server, concurrency=4).read(*BLOCK)
    parallel = timer() - serial
    assert serial >= 1.2 and parallel < 0.9, (serial, parallel)


def test_overzoom_beyond_service_max_zoom(tile_server: TileServer) -> None:
    mosaic = xyz(tile_server, max_zoom=21).read(22, 2476848, 2093088)
    assert mosaic.overzoom == 1 and not mosaic.empty
    assert dict(tile_server.requests) == {FIRST: 1}, "one z21 tile serves the whole z22 block"


def test_read_inside_a_running_event_loop(tile_server: TileServer) -> None:
    source = xyz(tile_server)

    async def main() -> bool:
        return not source.read(*BLOCK).empty

    assert asyncio.run(main())


def test_tiles_read_again_come_from_the_cache(
    tile_server: TileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("worker.imagery.xyz.CACHED_TILES", 6)
    source = xyz(tile_server)
    first = source.read(*BLOCK)
    z, x, y = BLOCK
    again = source.read(z, x + 1, y, 2, 2)  # shares its west column with the first block
    assert sum(tile_server.requests.values()) == 6  # 4, then only the 2 new tiles
    np.testing.assert_array_equal(again.rgb[:, :256], first.rgb[:, 256:])
    source.read(z, x + 3, y, 1, 2)  # 2 more: the cache holds 6, the oldest 2 go
    source.read(*BLOCK)
    assert sum(tile_server.requests.values()) == 10  # the 2 evicted tiles, fetched again
    assert tile_server.requests[FIRST] == 2


def test_dataset_url_tiles_read_tms_rows(tile_server: TileServer, tmp_path: Path) -> None:
    # The dataset builder reads map truth from a tile service through this source, {-y} too.
    from worker.dataset import SourceTiles

    z, x, y = 19, 309606, 261636
    tms = tmp_path / str(z) / str(x)
    tms.mkdir(parents=True)
    shutil.copy(KAMPALA / str(z) / str(x) / f"{y}.png", tms / f"{(1 << z) - 1 - y}.png")
    tile_server.root = tmp_path
    config = XYZImageryConfig(type="xyz", url=tile_server.base_url + "/{z}/{x}/{-y}.png")
    got = SourceTiles(XYZSource(config), maps=True).tile(z, x, y)
    assert got is not None
    want = np.asarray(Image.open(KAMPALA / str(z) / str(x) / f"{y}.png").convert("RGB"))
    np.testing.assert_array_equal(got[0][got[1] > 0], want[got[1] > 0])
