"""Connection limits of the served API (uvicorn with `server_options`): a client sending its
headers slowly is cut off; a prompt request on the same kind of connection is answered."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from app.cli.serve import server_options
from app.http_protocol import HeaderTimeoutProtocol
from app.main import create_app
from tests.browser.live_service import free_port


@pytest.fixture
def live_port(make_settings, monkeypatch):
    monkeypatch.setattr(HeaderTimeoutProtocol, "header_timeout", 0.5)
    settings = make_settings()
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                            log_level="warning", **server_options(settings))  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=20)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""  # EOF: the server hung up
    except TimeoutError:
        return False


def test_slow_headers_are_cut_off(live_port):
    with socket.create_connection(("127.0.0.1", live_port)) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        assert closed_within(slow, 5)
    with socket.create_connection(("127.0.0.1", live_port)) as silent:
        assert closed_within(silent, 5)  # connected, sent nothing


def test_a_prompt_request_is_answered_and_the_connection_kept_alive(live_port):
    with socket.create_connection(("127.0.0.1", live_port)) as sock:
        for _ in range(2):  # two requests on one connection, each well within the timeout
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            sock.settimeout(5)
            answer = b""
            while b'{"status":"ok"}' not in answer:
                chunk = sock.recv(4096)
                assert chunk, f"connection closed after {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.7)  # idle between requests is the keep-alive timeout's (5 s), not this
