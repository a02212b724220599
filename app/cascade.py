"""The queue side of the lazy quadtree: block jobs on RQ, parent-first, deduplicated, bounded.

A block's job depends on the job of the block that renders its parent tile, recursively up to
the layer's root zoom, so every block finds its cascade reference in the store when it runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import cast

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.settings import Layer, Settings
from app.store import TileStore
from app.tiles import Block

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "mapcascade:events"
JOB_FUNCTION = "worker.jobs.generate_block"
ACTIVE = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


class State(Enum):
    READY = "ready"
    PENDING = "pending"
    FAILED = "failed"


@dataclass
class BlockState:
    state: State
    job_id: str | None = None
    reason: str | None = None
    retry_after: int = 0


class RateLimited(Exception):
    def __init__(self, outstanding: int, limit: int):
        super().__init__(f"{outstanding} blocks already queued for this client (limit {limit})")
        self.outstanding = outstanding
        self.limit = limit


def job_id(block: Block) -> str:
    # RQ ids allow letters, digits, _ and -; the trailing three numbers keep it unambiguous.
    return f"block_{block.layer}_{block.z}_{block.x}_{block.y}"


def lock_name(block: Block) -> str:
    return f"mapcascade:lock:{block.key}"


class Cascade:
    def __init__(self, redis: Redis, store: TileStore, settings: Settings):
        self.redis = redis
        self.store = store
        self.settings = settings
        self.queue = Queue(settings.queue_name, connection=redis)

    def ensure(self, layer: Layer, block: Block, client: str | None = None) -> BlockState:
        """Make sure the block is stored or on its way; enqueue it and missing ancestors.

        `client` names an anonymous caller whose outstanding blocks are bounded; None = admin.
        """
        job, _ = self._ensure(layer, block, client)
        return self.state(block, job)

    def _ensure(self, layer: Layer, block: Block, client: str | None) -> tuple[Job | None, bool]:
        """The job that makes the block (None when stored) and whether it was created now."""
        if self.store.has_block(block):
            return None, False
        job = self.fetch(block)
        status = job.get_status() if job else None
        if status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED):
            return job, False
        if status == JobStatus.FAILED:  # kept for failure_cooldown, then a miss tries again
            return job, False
        upstream: Job | None = None
        upstream_new = False
        if block.z >= layer.root_zoom:  # the parent tile is itself generated
            upstream, upstream_new = self._ensure(layer, block.upstream(), client)
            if upstream is not None and upstream.get_status() == JobStatus.FAILED:
                return upstream, False
        if status == JobStatus.DEFERRED and upstream is not None and not upstream_new:
            return job, False  # still waiting on a live upstream job
        if job is not None:  # finished but truncated since, stopped, or deferred on a stale job
            job.delete()
        if client is not None:
            self._charge(client)
        job = self._enqueue(block, upstream)
        if client is not None:
            self.redis.zadd(_client_key(client), {job.id: time.time()})
            self.redis.expire(_client_key(client), self.settings.job_timeout * 4)
        return job, True

    def _enqueue(self, block: Block, upstream: Job | None) -> Job:
        s = self.settings
        retry = None
        if s.job_retries > 0:
            intervals = [max(1, round(s.retry_backoff * 2**i)) for i in range(s.job_retries)]
            retry = Retry(max=s.job_retries, interval=intervals)
        log.info("enqueue block %s (after %s)", block.key, upstream.id if upstream else "-")
        return self.queue.enqueue_call(
            JOB_FUNCTION,
            args=(block.layer, block.z, block.x, block.y),
            job_id=job_id(block),
            depends_on=upstream,
            timeout=s.job_timeout,
            retry=retry,
            result_ttl=600,
            failure_ttl=s.failure_cooldown,
            description=f"generate block {block.key}",
        )

    def _charge(self, client: str) -> None:
        key = _client_key(client)
        ids = [m.decode() for m in cast(list[bytes], self.redis.zrange(key, 0, -1))]
        done = [
            i for i, status in zip(ids, self._statuses(ids), strict=True) if status not in ACTIVE
        ]
        if done:
            self.redis.zrem(key, *done)
        outstanding = len(ids) - len(done)
        if outstanding >= self.settings.max_outstanding_per_client:
            raise RateLimited(outstanding, self.settings.max_outstanding_per_client)

    def _statuses(self, ids: list[str]) -> list[JobStatus | None]:
        statuses: list[JobStatus | None] = []
        for jid in ids:
            try:
                statuses.append(Job.fetch(jid, connection=self.redis).get_status())
            except NoSuchJobError:
                statuses.append(None)
        return statuses

    def fetch(self, block: Block) -> Job | None:
        try:
            return Job.fetch(job_id(block), connection=self.redis)
        except NoSuchJobError:
            return None

    def state(self, block: Block, job: Job | None = None) -> BlockState:
        if self.store.has_block(block):
            return BlockState(State.READY)
        job = job or self.fetch(block)
        if job is None:
            return BlockState(State.PENDING)
        if job.get_status() == JobStatus.FAILED:
            result = job.latest_result()
            reason = (result.exc_string or "").strip().splitlines() if result else []
            return BlockState(
                State.FAILED,
                job.id,
                reason=reason[-1] if reason else "generation failed",
                retry_after=max(1, self.redis.ttl(job.key) or self.settings.failure_cooldown),
            )
        return BlockState(State.PENDING, job.id)

    def queue_depth(self) -> dict[str, int]:
        q = self.queue
        return {
            "queued": q.count,
            "deferred": q.deferred_job_registry.count,
            "scheduled": q.scheduled_job_registry.count,
            "started": q.started_job_registry.count,
        }


def _client_key(client: str) -> str:
    return f"mapcascade:client:{client}"
