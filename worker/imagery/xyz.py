"""Imagery from an XYZ/TMS tile service over HTTP: bounded concurrency, per-attempt deadlines,
retries with exponential backoff; 404/204 mean no data there.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from app import __version__
from app.imagery_config import XYZImageryConfig
from worker.imagery.base import (
    ImageryError,
    Mosaic,
    TileCoord,
    TileImage,
    decode_tile,
    read_pyramid,
)

logger = logging.getLogger(__name__)

USER_AGENT = f"mapcascade/{__version__} (+https://github.com/mapcascade)"
NO_DATA_STATUSES = frozenset({204, 404})
# Worth another try: the server is overloaded, rate-limiting or briefly broken.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
CACHED_TILES = 256  # ~67 MB of decoded tiles per source
MAX_DELAY = 10.0  # seconds; a longer wait is better spent by the job queue's own retry

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code (the RQ job), even when a loop already runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def tile_url(config: XYZImageryConfig, z: int, x: int, y: int, attempt: int = 0) -> str:
    """The URL of tile z/x/y (XYZ row); {s} rotates by tile, and on retries, across subdomains."""
    url = config.url
    if config.subdomains:
        subdomain = config.subdomains[(x + y + attempt) % len(config.subdomains)]
        url = url.replace("{s}", subdomain)
    return (
        url.replace("{z}", str(z))
        .replace("{x}", str(x))
        .replace("{-y}", str((1 << z) - 1 - y))
        .replace("{y}", str(y))
    )


class XYZSource:
    """Reads blocks from a tile service. Each read opens its own short-lived HTTP client: no
    thread or loop outlives a call, so the source survives RQ's fork-per-job work horses."""

    def __init__(self, config: XYZImageryConfig) -> None:
        self.config = config
        self.max_zoom = config.max_zoom
        self.headers = {"User-Agent": USER_AGENT, **config.headers}
        # Decoded tiles (None: the service has none), newest last. A block's context margin
        # reads the tiles of its neighbours, which read them again: each is fetched once.
        self._cache: OrderedDict[tuple[int, int, int], TileImage | None] = OrderedDict()

    def read(self, z: int, x: int, y: int, width: int = 2, height: int = 2) -> Mosaic:
        return read_pyramid(self._fetch, self.max_zoom, z, x, y, width, height)

    def close(self) -> None:
        """Nothing held between reads."""

    def _fetch(self, z: int, coords: list[TileCoord]) -> dict[TileCoord, TileImage | None]:
        found = {c: self._cache[(z, *c)] for c in coords if (z, *c) in self._cache}
        missing = [c for c in coords if c not in found]
        if missing:
            found |= run_sync(self._fetch_all(z, missing))
        for c in coords:
            self._cache[(z, *c)] = found[c]
            self._cache.move_to_end((z, *c))
        while len(self._cache) > CACHED_TILES:
            self._cache.popitem(last=False)
        return found

    async def _fetch_all(
        self, z: int, coords: list[TileCoord]
    ) -> dict[TileCoord, TileImage | None]:
        timeout = self.config.timeout
        limits = httpx.Limits(max_connections=self.config.concurrency)
        http_timeout = httpx.Timeout(timeout.read, connect=timeout.connect)
        gate = asyncio.Semaphore(self.config.concurrency)
        async with httpx.AsyncClient(
            headers=self.headers, timeout=http_timeout, limits=limits, follow_redirects=True
        ) as client:
            try:
                # A TaskGroup cancels the sibling requests as soon as one tile fails for good.
                async with asyncio.TaskGroup() as group:
                    tasks = {
                        coord: group.create_task(self._fetch_tile(client, gate, z, *coord))
                        for coord in coords
                    }
            except* ImageryError as failures:
                raise failures.exceptions[0] from None
        return {coord: task.result() for coord, task in tasks.items()}

    async def _fetch_tile(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, z: int, x: int, y: int
    ) -> TileImage | None:
        attempts = self.config.retries + 1
        problem = ""
        for attempt in range(attempts):
            url = tile_url(self.config, z, x, y, attempt)
            retry_after: float | None = None
            async with gate:
                try:
                    # The deadline covers the whole attempt: a server trickling one byte at a
                    # time never trips httpx's per-read timeout, but it trips this one.
                    response = await asyncio.wait_for(client.get(url), self.config.timeout.total)
                except TimeoutError:
                    problem = f"no complete answer within {self.config.timeout.total:g} s"
                    response = None
                except httpx.TransportError as exc:
                    # Timeouts (connect/read), refused or reset connections, protocol errors.
                    problem = f"{type(exc).__name__} {exc}".strip()
                    response = None
            if response is not None:
                status = response.status_code
                if status in NO_DATA_STATUSES:
                    logger.debug("no tile at %s (HTTP %d)", url, status)
                    return None
                if status == 200:
                    return self._decode(url, response)
                problem = f"HTTP {status}"
                if status not in RETRY_STATUSES:
                    raise ImageryError(f"tile {z}/{x}/{y}: {url} answered {problem}")
                retry_after = _retry_after(response)
            if attempt + 1 < attempts:
                delay = self._delay(attempt, retry_after)
                logger.warning(
                    "tile %d/%d/%d: %s gave %s; retry %d/%d in %.2f s",
                    z,
                    x,
                    y,
                    url,
                    problem,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                await asyncio.sleep(delay)
        raise ImageryError(
            f"tile {z}/{x}/{y}: {url} failed after {attempts} attempt(s), last: {problem}"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        # Jittered exponential backoff, so retried workers do not hammer the server in step.
        delay = self.config.backoff * (2**attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, MAX_DELAY)

    @staticmethod
    def _decode(url: str, response: httpx.Response) -> TileImage:
        try:
            return decode_tile(response.content)
        except (OSError, ValueError) as exc:
            kind = response.headers.get("content-type", "unknown type")
            message = f"{url} answered 200 with an undecodable {kind} body: {exc}"
            raise ImageryError(message) from exc


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds when the server says so (the HTTP-date form is ignored)."""
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
