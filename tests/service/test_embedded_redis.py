"""The embedded Redis of `mapcascade serve` keeps its data through a crash (issue 15, item 4)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from redis import Redis

from app.embedded import EmbeddedRedis, process_alive


def test_a_killed_embedded_redis_restarts_with_every_write(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "redis").start()
    client = Redis.from_url(first.url)
    client.rpush("rq:queue:mapcascade", *[f"job-{i}" for i in range(50)])
    client.hset("seed:1", mapping={"done": 3, "total": 21})
    time.sleep(1.5)  # the append-only file is fsynced every second
    assert first.process is not None
    os.kill(first.process.pid, signal.SIGKILL)  # a crash: no shutdown, no final save
    first.process.wait()
    client.close()

    second = EmbeddedRedis(tmp_path / "redis").start()
    try:
        client = Redis.from_url(second.url)
        assert client.llen("rq:queue:mapcascade") == 50
        assert client.hgetall("seed:1") == {b"done": b"3", b"total": b"21"}
        client.close()
    finally:
        second.stop()


def test_process_alive_knows_no_pid_zero() -> None:
    # A worker registered without a pid is dead; kill(0, 0) would probe our own group instead.
    assert process_alive(os.getpid())
    assert not process_alive(0) and not process_alive(-1)
