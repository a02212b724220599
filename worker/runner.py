"""Runs one RQ worker process: recover what a killed worker left, load the model, take jobs."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import cast

import torch
from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.job import JobStatus

from app.blockjob import BlockJob
from app.embedded import process_alive
from app.settings import Settings
from worker.context import current, worker_name

log = logging.getLogger(__name__)


def run_worker(settings: Settings | None = None, burst: bool = False) -> None:
    settings = settings or Settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    if settings.supervisor_pid:
        exit_with_supervisor(settings.supervisor_pid)
    redis = Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=redis)
    recover_dead_workers(queue)
    current().warm_up()
    # SimpleWorker runs jobs in this process: the model stays loaded (and CUDA is never forked).
    worker = SimpleWorker([queue], connection=redis, name=worker_name())
    worker.work(with_scheduler=True, burst=burst, logging_level="INFO")


def exit_with_supervisor(supervisor: int, interval: float = 0.5) -> None:
    """Kill this worker and its scheduler the moment the `mapcascade serve` that started it is
    gone (even SIGKILLed): an orphan would go on writing into the store. Its block is requeued
    by the next worker on this host (`recover_dead_workers`)."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(interval)
        log.warning("mapcascade serve (pid %s) is gone; stopping this worker", supervisor)
        os.killpg(os.getpgrp(), signal.SIGKILL)  # the worker leads its group; its scheduler too

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def recover_dead_workers(queue: Queue) -> int:
    """Requeue the jobs of workers on this host whose process is gone (e.g. SIGKILLed).

    RQ would notice them too, but only after their heartbeat expires (minutes); a restarted
    worker on the same host knows at once. Their block locks are freed with them.
    """
    host, recovered = socket.gethostname(), 0
    for dead in Worker.all(queue=queue):
        if dead.hostname != host or (dead.pid != os.getpid() and process_alive(dead.pid or 0)):
            continue
        job = dead.get_current_job()
        if job is not None and job.get_status() == JobStatus.STARTED:
            _free_lock(queue.connection, BlockJob.of(job), dead.name)
            queue.started_job_registry.remove_executions(job)
            queue.enqueue_job(job)
            recovered += 1
            log.warning("requeued block job %s of dead worker %s", job.id, dead.name)
        dead.register_death()
    return recovered


def _free_lock(redis: Redis, job: BlockJob, worker_name: str) -> None:
    token = cast(bytes | None, redis.get(job.lock_name))
    if token is not None and token.decode().startswith(f"{worker_name}|"):
        redis.delete(job.lock_name)
