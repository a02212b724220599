"""Pytest fixtures for the imagery tests: a local tile server, a stopwatch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer

import pytest
from imagery_fixtures import KAMPALA, TileServer, make_handler


@pytest.fixture
def tile_server() -> Iterator[TileServer]:
    """A tile server on 127.0.0.1 serving the Kampala fixture tiles; stopped after the test."""
    state = TileServer(root=KAMPALA)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = False  # so server_close() joins every handler thread
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture
def timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
