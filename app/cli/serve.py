"""`mapcascade serve | api | worker`: the processes of DESIGN.md section 3."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import uvicorn

from app.settings import Settings

log = logging.getLogger("mapcascade.serve")

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "[::1]", "::1"]
WORKER_RESTART_DELAYS = (1, 2, 5, 10, 30)  # seconds, growing while the worker keeps dying


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API binds.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--data-dir",
    default="./data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Tiles, block metadata and the Redis snapshot.",
)
def serve(host: str, port: int, data_dir: Path) -> None:
    """Embedded Redis + one worker + the API, with the demo layer. Ctrl-C stops all of them."""
    from app.embedded import DataDirInUse, EmbeddedRedis
    from app.main import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        redis = EmbeddedRedis(data_dir / "redis").start()
    except DataDirInUse as e:
        raise click.ClickException(str(e)) from None
    env = {**os.environ, "MAPCASCADE_REDIS_URL": redis.url, "MAPCASCADE_DATA_DIR": str(data_dir),
           "MAPCASCADE_LOOPBACK_ADMIN": "true"}  # fmt: skip
    if host in LOOPBACK_NAMES:  # loopback admin: a page rebinding its name here is refused
        env.setdefault("MAPCASCADE_ALLOWED_HOSTS", json.dumps(LOOPBACK_NAMES))
    os.environ.update(env)  # the in-process API reads the same settings
    supervisor = WorkerSupervisor(env)
    # uvicorn re-raises SIGTERM (docker stop, systemd) once it has shut down; by default that
    # kills this process before `finally` stops the worker and Redis. Handled as Ctrl-C is, it
    # unwinds through `finally`.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        settings = Settings()  # validates the layers before anything starts
        check_store(settings)
        supervisor.start()
        click.echo(f"mapcascade: http://{host}:{port}/  (Ctrl-C to stop)")
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info",
                    **server_options(settings))  # fmt: skip
    finally:
        supervisor.stop()
        redis.stop()


class WorkerSupervisor:
    """Keeps one worker process alive (restarting it if it dies) and stops it on exit.

    One thread starts, restarts and stops the worker; the worker exits by itself when this
    process dies (MAPCASCADE_SUPERVISOR_PID), so even a SIGKILL leaves no orphan behind.
    """

    def __init__(self, env: dict[str, str]):
        self.env = {**env, "MAPCASCADE_SUPERVISOR_PID": str(os.getpid())}
        self.process: subprocess.Popen | None = None
        self._started = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _spawn(self) -> None:
        # Its own session: a terminal's Ctrl-C goes to us, and we stop the worker in order.
        # -P: a folder named like our packages in the working directory must not shadow them.
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "app.cli", "worker"], env=self.env, start_new_session=True
        )
        self._started = time.monotonic()

    def _watch(self) -> None:
        self._spawn()
        failures = 0
        while not self._stopping.wait(1.0):
            if self.process is None or self.process.poll() is None:
                continue
            # A worker that lived a while died of something transient; one that dies at once
            # (a broken layer or model) is retried ever more slowly instead of in a hot loop.
            failures = 0 if time.monotonic() - self._started > 60 else failures + 1
            delay = WORKER_RESTART_DELAYS[min(failures, len(WORKER_RESTART_DELAYS) - 1)]
            log.warning("worker exited with %s; restarting in %ss", self.process.returncode, delay)
            if self._stopping.wait(delay):
                break
            self._spawn()
        self._stop_worker()

    def _stop_worker(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # RQ's warm shutdown: finish the current block
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)  # its scheduler with it
            self.process.wait()


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="uvicorn processes.",
)
def api(host: str, port: int, workers: int) -> None:
    """The HTTP API only, against MAPCASCADE_REDIS_URL (Docker: the `api` service)."""
    settings = Settings()
    settings.default_layer  # noqa: B018 - fail fast on a bad layers file, before forking
    check_store(settings)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        **server_options(settings),
    )


def server_options(settings: Settings) -> dict:
    """uvicorn believes X-Forwarded-For/-Proto from the configured trusted proxies only (its
    own default would trust 127.0.0.1, so a local process could pose as any client). Idle
    keep-alive connections close after 5 s, request headers must arrive within 10 s
    (app/http_protocol.py), a shutdown waits 10 s for open event streams, which never end."""
    from app.http_protocol import HeaderTimeoutProtocol

    trusted = settings.trusted_proxies
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": ",".join(trusted) or None,
            "timeout_keep_alive": 5, "timeout_graceful_shutdown": 10,
            "http": HeaderTimeoutProtocol}  # fmt: skip


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def worker(burst: bool) -> None:
    """One generation worker against MAPCASCADE_REDIS_URL (Docker: the `worker` service)."""
    from worker.runner import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    check_store(settings)
    run_worker(settings, burst=burst)


def check_store(settings: Settings) -> None:
    """Bad store settings stop start-up with one line naming the setting, not a traceback."""
    from app.store import StoreConfigError, open_store

    try:
        open_store(settings)
    except StoreConfigError as e:
        raise click.ClickException(str(e)) from None
