"""Where a cache hit's time goes in the API: one uvicorn server in this process under cProfile,
driven by wrk over the same stored tiles as run.py, then the top functions by own and
cumulative time. cProfile slows every Python call alike, so read shares, not milliseconds.

    .venv/bin/python benchmarks/serve/profile_hits.py --seconds 10 --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from run import LAYER, WRK_LUA, ZOOM, free_port, write_store  # benchmarks/serve/run.py

from app.cli.serve import server_options
from app.embedded import EmbeddedRedis
from app.main import create_app
from app.settings import Settings


class ProfiledServer(uvicorn.Server):
    """uvicorn whose event loop thread can be profiled from another thread."""

    loop: asyncio.AbstractEventLoop

    async def startup(self, sockets=None) -> None:  # noqa: ANN001 - uvicorn's signature
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", type=Path, help="also write the raw pstats here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="mapcascade-profile-hits-"))
    redis = EmbeddedRedis().start()
    try:
        data_dir = tmp / "data"
        paths, bounds, _ = write_store(data_dir, args.tiles)
        (tmp / "paths.txt").write_text("\n".join(paths) + "\n")
        (tmp / "tiles.lua").write_text(WRK_LUA)
        layer = {"name": LAYER, "imagery": {"type": "world", "seed": 1}, "bounds": list(bounds),
                 "root_zoom": ZOOM, "max_zoom": ZOOM, "model": "tiny"}  # fmt: skip
        (tmp / "layers.yml").write_text(json.dumps({"layers": [layer]}))
        settings = Settings(data_dir=data_dir, layers_file=tmp / "layers.yml", redis_url=redis.url)
        port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                log_level="warning", **server_options(settings))  # fmt: skip
        server = ProfiledServer(config)
        base = f"http://127.0.0.1:{port}"

        def wrk(seconds: float) -> subprocess.CompletedProcess[str]:
            command = ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds:g}s",
                       "-s", str(tmp / "tiles.lua"), base]  # fmt: skip
            env = {**os.environ, "TILE_PATHS": str(tmp / "paths.txt")}
            return subprocess.run(command, capture_output=True, text=True, env=env)

        def load() -> None:
            while not server.started:
                time.sleep(0.05)
            assert httpx.get(base + paths[0]).headers["x-cache"] == "HIT"
            wrk(2)  # warm-up, not profiled
            server.loop.call_soon_threadsafe(profiler.enable)  # the server's thread
            out = wrk(args.seconds)
            server.loop.call_soon_threadsafe(profiler.disable)
            time.sleep(0.5)
            print(next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON")))
            server.should_exit = True

        profiler = cProfile.Profile()
        threading.Thread(target=load, daemon=True).start()
        server.run()
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        profiler.dump_stats(args.out)
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(args.top)
        print(text.getvalue())


if __name__ == "__main__":
    main()
