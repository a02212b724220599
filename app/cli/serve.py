"""`mapcascade serve | api | worker`: the processes of DESIGN.md section 3."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import click
import uvicorn

log = logging.getLogger("mapcascade.serve")

WORKER_RESTART_DELAY = 1.0


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
    from app.embedded import EmbeddedRedis
    from app.main import create_app
    from app.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    data_dir.mkdir(parents=True, exist_ok=True)
    redis = EmbeddedRedis(data_dir / "redis").start()
    env = {**os.environ, "MAPCASCADE_REDIS_URL": redis.url, "MAPCASCADE_DATA_DIR": str(data_dir)}
    os.environ.update(env)  # the in-process API reads the same settings
    supervisor = WorkerSupervisor(env)
    try:
        settings = Settings()  # validates the layers before anything starts
        supervisor.start()
        click.echo(f"mapcascade: http://{host}:{port}/  (Ctrl-C to stop)")
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    finally:
        supervisor.stop()
        redis.stop()


class WorkerSupervisor:
    """Keeps one worker process alive (restarting it if it dies) and stops it on exit."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        # Its own session: a terminal's Ctrl-C goes to us, and we stop the worker in order.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"], env=self.env, start_new_session=True
        )

    def _watch(self) -> None:
        while not self._stopping.wait(WORKER_RESTART_DELAY):
            if self.process is not None and self.process.poll() is not None:
                log.warning("worker exited with %s; starting a new one", self.process.returncode)
                self._spawn()

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # RQ's warm shutdown: finish the current block
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
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
    from app.settings import Settings

    Settings().default_layer  # noqa: B018 - fail fast on a bad layers file, before forking
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_level="info",
    )


@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty.")
def worker(burst: bool) -> None:
    """One generation worker against MAPCASCADE_REDIS_URL (Docker: the `worker` service)."""
    from worker.runner import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_worker(burst=burst)
