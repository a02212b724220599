"""Cached-tile serving, side by side on the same files: plain nginx (the limit), the nginx front
of deploy/nginx/ before the API, and `mapcascade api` alone; with --s3 also the nginx front on
an S3 store (the same tiles in a local SeaweedFS bucket that allows anonymous reads).

Writes N real PNG tiles into a temporary store, starts the three servers on loopback, drives
them with the same load generator in interleaved rounds, and prints requests/s, p50 and p99 per
server plus the ratios to plain nginx. Every process it starts is stopped.

    .venv/bin/python benchmarks/serve/run.py            # defaults: 1024 tiles, 3 x 10 s rounds
    .venv/bin/python benchmarks/serve/run.py --s3       # + front-s3 (needs the dev extras' weed)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import mercantile
import numpy as np
from PIL import Image, ImageDraw

from app.cli.nginx import render
from app.embedded import EmbeddedRedis
from app.settings import Settings

if TYPE_CHECKING:
    from tests.s3server import SeaweedS3

ROOT = Path(__file__).resolve().parents[2]
LAYER = "bench"
ZOOM = 16
# A corner of Helsinki; the bench layer's bounds are exactly the tiles written.
ORIGIN_X, ORIGIN_Y = 37_408, 18_960


@dataclass
class Run:
    server: str
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def map_like_png(rng: random.Random) -> bytes:
    """A 256x256 map-like tile: flat areas, blocks and roads, plus the slight grain of a
    generated map (without it the PNGs are ~4 KB, far smaller than the model's output)."""
    palette = ["#f2efe9", "#d8e8c8", "#aad3df", "#e0dfdf", "#d9d0c9", "#c8facc"]
    im = Image.new("RGB", (256, 256), rng.choice(palette))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(15, 40)):
        x, y = rng.randrange(256), rng.randrange(256)
        w, h = rng.randint(6, 60), rng.randint(6, 60)
        draw.rectangle([x, y, x + w, y + h], fill=rng.choice(palette), outline="#b5a99a")
    for _ in range(rng.randint(3, 8)):
        pts = [(rng.randrange(256), rng.randrange(256)) for _ in range(3)]
        draw.line(pts, fill=rng.choice(["#ffffff", "#f7fabf", "#fcd6a4"]), width=rng.randint(3, 9))
    grain = np.random.default_rng(rng.randrange(1 << 30)).integers(-2, 3, (256, 256, 1))
    pixels = np.clip(np.asarray(im, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def write_store(data_dir: Path, count: int) -> tuple[list[str], tuple[float, ...], int]:
    """Tiles at `{data_dir}/tiles/bench/16/{x}/{y}.png`; returns URL paths, bounds, total bytes."""
    side = int(count**0.5)
    rng = random.Random(0)
    paths, total = [], 0
    for dx in range(side):
        for dy in range(side):
            x, y = ORIGIN_X + dx, ORIGIN_Y + dy
            f = data_dir / "tiles" / LAYER / str(ZOOM) / str(x) / f"{y}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            png = map_like_png(rng)
            f.write_bytes(png)
            total += len(png)
            paths.append(f"/tiles/{ZOOM}/{x}/{y}.png")
    west, north = mercantile.ul(ORIGIN_X, ORIGIN_Y, ZOOM)
    east, south = mercantile.ul(ORIGIN_X + side, ORIGIN_Y + side, ZOOM)
    # A hair inside, so that the neighbouring tiles do not count as intersecting.
    eps = 1e-7
    random.Random(1).shuffle(paths)
    return paths, (west + eps, south + eps, east - eps, north - eps), total


def plain_server(data_dir: Path, port: int) -> str:
    # Same URL shape (/tiles/{z}/{x}/{y}.png, the default layer) and caching headers as the service.
    return textwrap.dedent(f"""\
        types {{ image/png png; }}
        server {{
            listen 127.0.0.1:{port};
            location /tiles/ {{
                alias {data_dir}/tiles/{LAYER}/;
                etag on;
                add_header Cache-Control "public, max-age=86400";
            }}
        }}
        """)


def nginx_conf(root: Path, workers: int) -> str:
    """The same main config for plain nginx and the front: only their server blocks differ."""
    return textwrap.dedent(f"""\
        worker_processes {workers};
        pid {root}/nginx.pid;
        error_log {root}/error.log warn;
        events {{ worker_connections 1024; }}
        http {{
            sendfile on;
            tcp_nopush on;
            keepalive_requests 100000;
            open_file_cache max=4096 inactive=60s;
            access_log {root}/access.log combined buffer=64k;
            client_body_temp_path {root}/tmp;
            proxy_temp_path {root}/tmp;
            fastcgi_temp_path {root}/tmp;
            uwsgi_temp_path {root}/tmp;
            scgi_temp_path {root}/tmp;
            include {root}/servers.conf;
        }}
        """)


class Processes:
    """Children in their own process groups, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], log: Path, **kw: object) -> subprocess.Popen:
        with log.open("wb") as out:
            p = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )
        self.procs.append((name, p))
        return p

    def stop_all(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def start_nginx(
    procs: Processes, name: str, root: Path, servers: str, workers: int
) -> subprocess.Popen:
    (root / "tmp").mkdir(parents=True)
    (root / "servers.conf").write_text(servers)
    (root / "nginx.conf").write_text(nginx_conf(root, workers))
    args = ["nginx", "-p", str(root), "-c", str(root / "nginx.conf"), "-e", "stderr",
            "-g", "daemon off;"]  # fmt: skip
    return procs.start(name, args, root / "stdout.log")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited with {proc.returncode} before {url} answered"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def check_same_bytes(nginx: str, service: str, paths: list[str], data_dir: Path) -> None:
    """Both servers must serve the stored file, the service as a cache hit."""
    for path in paths[:20]:
        a = httpx.get(nginx + path)
        b = httpx.get(service + path)
        z, x, y = path.removeprefix("/tiles/").removesuffix(".png").split("/")
        stored = (data_dir / "tiles" / LAYER / z / x / f"{y}.png").read_bytes()
        assert a.status_code == b.status_code == 200, (path, a.status_code, b.status_code)
        assert a.content == b.content == stored, path
        assert b.headers.get("x-cache") == "HIT", b.headers
        assert "etag" in a.headers and "etag" in b.headers


def hits_counted(api: str) -> float:
    m = re.search(r'^mapcascade_tile_cache_total\{result="hit"\} ([0-9.]+)$',
                  httpx.get(api + "/metrics").text, re.M)  # fmt: skip
    return float(m.group(1)) if m else 0.0


SAME_HEADERS = ("content-type", "etag", "last-modified", "cache-control", "x-cache")


def check_served_by_nginx(
    front: str, api: str, paths: list[str], headers: tuple[str, ...] = SAME_HEADERS
) -> None:
    """The front answers hits itself (the API counts none) with the API's headers."""
    before = hits_counted(api)
    sample = paths[:20]
    for path in sample:
        a, b = httpx.get(front + path), httpx.get(api + path)
        for h in headers:
            assert a.headers.get(h) == b.headers.get(h), (path, h, a.headers, b.headers)
    assert hits_counted(api) == before + len(sample), "the front passed hits to the API"


WRK_LUA = """\
-- Cycles through the tile paths in $TILE_PATHS, a different start per connection thread.
local paths = {}
for line in io.lines(os.getenv("TILE_PATHS")) do paths[#paths + 1] = line end
local i = math.random(#paths)
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def s3_front(
    procs: Processes, tmp: Path, data_dir: Path, settings: Settings, api: str, port: int,
    workers: int,
) -> tuple[subprocess.Popen, SeaweedS3]:  # fmt: skip
    """The tiles copied into a SeaweedFS bucket anyone may read, and the front rendered for it
    (the API behind it stays on the folder: every request measured is a hit from the bucket)."""
    from tests.s3server import SeaweedS3  # the dev extras' SeaweedFS, as the tests start it

    seaweed = SeaweedS3(tmp / "seaweedfs", public_buckets=("bench",)).start()
    client = seaweed.client()
    client.create_bucket(Bucket="bench")
    for f in (data_dir / "tiles").rglob("*.png"):
        key = f"tiles/{f.relative_to(data_dir / 'tiles')}"
        client.put_object(Bucket="bench", Key=key, Body=f.read_bytes(), ContentType="image/png")
    s3 = settings.model_copy(update=seaweed.settings("bench", "tiles"))
    conf = render(s3, api=api, listen=f"127.0.0.1:{port}")
    return start_nginx(procs, "front-s3", tmp / "front-s3", conf, workers), seaweed


def run_wrk(
    base: str, seconds: float, connections: int, lua: Path, paths_file: Path
) -> tuple[int, float, float, float, int]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "-s",
            str(lua),
            base,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TILE_PATHS": str(paths_file)},
        timeout=seconds + 30,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    r = json.loads(line.removeprefix("WRK_JSON "))
    return r["requests"], r["duration_us"] / 1e6, r["p50_us"] / 1e3, r["p99_us"] / 1e3, r["errors"]


def run_python(
    base: str, seconds: float, connections: int, paths: list[str]
) -> tuple[int, float, float, float, int]:
    """Fallback without wrk: asyncio + httpx. It saturates before nginx does; say so in reports."""
    import asyncio

    async def main() -> tuple[int, float, float, float, int]:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=5) as client:
            start = time.perf_counter()
            stop = start + seconds

            async def one(offset: int) -> None:
                nonlocal errors
                i = offset
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    try:
                        r = await client.get(paths[i % len(paths)])
                        if r.status_code != 200:
                            errors += 1
                    except httpx.HTTPError:
                        errors += 1
                    latencies.append(time.perf_counter() - t)
                    i += 1

            await asyncio.gather(*(one(k * 97) for k in range(connections)))
            elapsed = time.perf_counter() - start
        q = statistics.quantiles(latencies, n=100)
        return len(latencies), elapsed, q[49] * 1e3, q[98] * 1e3, errors

    return asyncio.run(main())


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "nginx": nginx_v.split("/")[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tiles", type=int, default=1024, help="tiles in the store (a square grid)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of one measured run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    ap.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers and nginx worker processes alike (1 leaves a core to the load "
        "generator on a 2-core machine)",
    )
    ap.add_argument(
        "--s3",
        action="store_true",
        help="also the nginx front on an S3 store (SeaweedFS on this machine, as server front-s3)",
    )
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument(
        "--compare-api",
        type=Path,
        metavar="CHECKOUT",
        help="also run the API from this checkout (PYTHONPATH), e.g. a worktree of main before "
        "a change, as server api@<folder name>",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serve" / "result.json")
    args = ap.parse_args()

    if shutil.which("nginx") is None:
        sys.exit("nginx is not installed (Debian: apt-get install nginx-light)")
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    mapcascade = shutil.which("mapcascade", path=str(Path(sys.executable).parent)) or "mapcascade"

    host = machine()  # before the run: the load average says how busy the machine was
    tmp = Path(tempfile.mkdtemp(prefix="mapcascade-bench-serve-"))
    tmp.chmod(0o755)  # nginx workers run as nobody when started by root
    procs = Processes()
    redis = EmbeddedRedis()
    seaweed: SeaweedS3 | None = None
    try:
        data_dir = tmp / "data"
        print(f"writing {args.tiles} tiles ...", flush=True)
        paths, bounds, total_bytes = write_store(data_dir, args.tiles)
        for d in data_dir.rglob("*"):
            if d.is_dir():
                d.chmod(0o755)
        paths_file = tmp / "paths.txt"
        paths_file.write_text("\n".join(paths) + "\n")
        lua = tmp / "tiles.lua"
        lua.write_text(WRK_LUA)
        layers = tmp / "layers.yml"
        layers.write_text(
            json.dumps(
                {
                    "layers": [
                        {
                            "name": LAYER,
                            "title": "benchmark tiles",
                            "imagery": {"type": "world", "seed": 1},
                            "bounds": list(bounds),
                            "root_zoom": ZOOM,
                            "max_zoom": ZOOM,
                            "model": "tiny",
                        }
                    ]
                }
            )
        )

        redis.start()
        env = {
            **os.environ,
            "MAPCASCADE_DATA_DIR": str(data_dir),
            "MAPCASCADE_REDIS_URL": redis.url,
            "MAPCASCADE_LAYERS_FILE": str(layers),
            "MAPCASCADE_TRUSTED_PROXIES": '["127.0.0.1"]',  # as behind the front
        }
        api_port, ngx_port, front_port = free_port(), free_port(), free_port()
        settings = Settings(data_dir=data_dir, layers_file=layers, redis_url=redis.url)
        front_conf = render(settings, api=f"127.0.0.1:{api_port}", listen=f"127.0.0.1:{front_port}")
        ngx = start_nginx(
            procs, "nginx", tmp / "nginx", plain_server(data_dir, ngx_port), args.workers
        )
        front = start_nginx(procs, "front", tmp / "front", front_conf, args.workers)
        servers = {
            "nginx": f"http://127.0.0.1:{ngx_port}",
            "front": f"http://127.0.0.1:{front_port}",
            "api": f"http://127.0.0.1:{api_port}",
        }
        if args.s3:
            front_s3_port = free_port()
            front_s3, seaweed = s3_front(procs, tmp, data_dir, settings, f"127.0.0.1:{api_port}",
                                         front_s3_port, args.workers)  # fmt: skip
            servers["front-s3"] = f"http://127.0.0.1:{front_s3_port}"
        apis = [("api", api_port, env)]
        if args.compare_api is not None:  # the same API from another checkout, e.g. before a change
            other_port = free_port()
            servers["api@" + args.compare_api.name] = f"http://127.0.0.1:{other_port}"
            apis.append(("api@" + args.compare_api.name, other_port,
                         {**env, "PYTHONPATH": str(args.compare_api.resolve())}))  # fmt: skip
        for name, port, api_env in apis:
            api = procs.start(name, [mapcascade, "api", "--host", "127.0.0.1", "--port", str(port),
                                     "--workers", str(args.workers)],
                              tmp / f"{name}.log", env=api_env, cwd=tmp)  # fmt: skip
            wait_ready(servers[name] + "/health", api)
        wait_ready(servers["nginx"] + paths[0], ngx)
        wait_ready(servers["front"] + paths[0], front)
        for name in servers:
            if name != "nginx":
                check_same_bytes(servers["nginx"], servers[name], paths, data_dir)
        check_served_by_nginx(servers["front"], servers["api"], paths)
        if args.s3:  # the object's ETag (MD5) and date, not the file's
            wait_ready(servers["front-s3"] + paths[0], front_s3)
            check_served_by_nginx(servers["front-s3"], servers["api"], paths,
                                  ("content-type", "cache-control", "x-cache"))  # fmt: skip

        def measure(name: str, seconds: float) -> tuple[int, float, float, float, int]:
            if loadgen == "wrk":
                return run_wrk(servers[name], seconds, args.connections, lua, paths_file)
            return run_python(servers[name], seconds, args.connections, paths)

        for name in servers:  # warm-up: imports, page cache, nginx open_file_cache
            measure(name, 2)
        runs: list[Run] = []
        for r in range(args.rounds):
            # Alternate the order so that no server always runs in another's wake; the pairs
            # compared (nginx and front, api and api@...) stay next to each other in time.
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                n, secs, p50, p99, errs = measure(name, args.seconds)
                run = Run(
                    name,
                    r,
                    n,
                    round(secs, 3),
                    round(n / secs, 1),
                    round(p50, 3),
                    round(p99, 3),
                    errs,
                )
                runs.append(run)
                print(
                    f"round {r} {name:12s} {run.rps:9.1f} req/s  p50 {run.p50_ms:7.2f} ms  "
                    f"p99 {run.p99_ms:7.2f} ms  errors {errs}",
                    flush=True,
                )
    finally:
        procs.stop_all()
        if seaweed is not None:
            seaweed.stop()
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {}
    for name in servers:
        mine = [r for r in runs if r.server == name]
        summary[name] = {
            "rps": round(statistics.median(r.rps for r in mine), 1),
            "p50_ms": round(statistics.median(r.p50_ms for r in mine), 3),
            "p99_ms": round(statistics.median(r.p99_ms for r in mine), 3),
            "errors": sum(r.errors for r in mine),
        }
    limit = summary["nginx"]

    def per_round(name: str) -> list[float]:
        # Each round's ratio, both measured one after the other in that round: on a shared
        # machine their median is steadier than the ratio of the medians.
        mine = [r.rps for r in runs if r.server == name]
        nginx = [r.rps for r in runs if r.server == "nginx"]
        return [a / b for a, b in zip(mine, nginx, strict=True)]

    ratios = {
        name: {
            "rps": round(s["rps"] / limit["rps"], 3),
            "p50": round(s["p50_ms"] / limit["p50_ms"], 2),
            "p99": round(s["p99_ms"] / limit["p99_ms"], 2),
            "rps_median_of_rounds": statistics.median(per_round(name)),
            "rps_per_round": [round(r, 3) for r in per_round(name)],
        }
        for name, s in summary.items()
        if name != "nginx"
    }
    result = {
        "benchmark": "cached tile serving: plain nginx, nginx front (files, and S3 with --s3), "
        "mapcascade api (same tiles)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/serve/run.py", *sys.argv[1:]]),
        "settings": {
            "tiles": len(paths),
            "mean_tile_bytes": round(total_bytes / len(paths)),
            "seconds": args.seconds,
            "rounds": args.rounds,
            "connections": args.connections,
            "workers": args.workers,
            "loadgen": loadgen,
            "summary": "median over rounds",
        },
        "machine": host,
        "summary": summary,
        "ratio_to_plain_nginx": ratios,
        "runs": [asdict(r) for r in runs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print()
    for name, s in summary.items():
        ratio = ratios.get(name)
        vs = (
            f"  x{ratio['rps']:.3f} of nginx (median of rounds x"
            f"{ratio['rps_median_of_rounds']:.3f}; rounds {ratio['rps_per_round']})"
            if ratio
            else ""
        )
        print(f"{name:12s} {s['rps']:9.1f} req/s  p50 {s['p50_ms']:7.2f} ms  "
              f"p99 {s['p99_ms']:7.2f} ms{vs}")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
