"""The queue side of the lazy quadtree: block jobs on RQ, parent-first, deduplicated, bounded.

A block's job depends on the job of the block that renders its parent tile, recursively up to
the layer's root zoom, so every block finds its cascade reference in the store when it runs.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from redis import Redis
from redis.exceptions import LockError
from rq import Queue
from rq.job import Job, JobStatus

from app.blockjob import BlockJob, client_key, delete_job, job_status
from app.errors import TooManyPending, Unavailable
from app.settings import Layer, Settings
from app.store import TileStore
from app.tiles import Block

log = logging.getLogger(__name__)

# A charge whose job does not exist yet is being enqueued: it counts for this many seconds.
CHARGE_GRACE_S = 30

# The miss budget, checked and charged in one step (concurrent misses cannot overshoot it):
# drop the client's finished jobs, then charge the block's job id unless the client is at its
# limit. A block already charged to the client counts once however often it is asked for.
# KEYS[1] the client's sorted set (job id -> time charged); ARGV: limit, job id, now, ttl,
# the RQ job key prefix, grace seconds. Returns the outstanding count, negative when refused.
_CHARGE = """
local active = 0
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local id, since = entries[i], tonumber(entries[i + 1])
  local status = redis.call('HGET', ARGV[5] .. id, 'status')
  local live = status == 'queued' or status == 'started' or status == 'scheduled'
    or status == 'deferred' or (not status and tonumber(ARGV[3]) - since < tonumber(ARGV[6]))
  if live then active = active + 1 else redis.call('ZREM', KEYS[1], id) end
end
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return active end
if active >= tonumber(ARGV[1]) then return -active - 1 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return active + 1
"""


MAX_CHAIN = 32  # ancestors a waiting request looks up for a failure (zoom levels)
LIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED)  # will run: never enqueue again
DEAD = (JobStatus.FINISHED, JobStatus.STOPPED, JobStatus.CANCELED)  # will not run again


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


class RateLimited(TooManyPending):
    """An anonymous client has its budget of queued blocks: 429 (app/errors.py)."""

    def __init__(self, outstanding: int, limit: int):
        super().__init__(
            f"too many tiles being generated for you: {outstanding} blocks already queued "
            f"for this client (limit {limit}); cached tiles stay available",
            retry_after=5,
            outstanding=outstanding,
            limit=limit,
        )


class BlockQueue:
    """Gets blocks generated: enqueues a block's job and its missing ancestors', bounds
    anonymous clients, reports a block's state, re-plans after a truncate."""

    def __init__(self, redis: Redis, store: TileStore, settings: Settings):
        self.redis = redis
        self.store = store
        self.settings = settings
        self.queue = Queue(settings.queue_name, connection=redis)
        self._charge_script = redis.register_script(_CHARGE)

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
        if job_status(job) in LIVE:
            return job, False
        # Concurrent misses of one block: one of them decides and enqueues, the others then
        # find its job (checking and enqueueing unlocked queued a block once per request).
        lock = self.redis.lock(BlockJob(block).enqueue_lock_name, timeout=30, blocking_timeout=20)
        try:
            with lock:
                return self._ensure_locked(layer, block, client)
        except LockError:
            raise Unavailable(f"block {block.key} is busy being queued", retry_after=2) from None

    def _ensure_locked(
        self, layer: Layer, block: Block, client: str | None
    ) -> tuple[Job | None, bool]:
        if self.store.has_block(block):
            return None, False
        job = self.fetch(block)
        status = job_status(job)
        # Only a job that will never store the block is replaced: finished (the block was
        # truncated since), stopped, cancelled, or deferred on an upstream job replaced below.
        # A failed one is kept for failure_cooldown; any other (queued, running, or in one of
        # RQ's transitions while it moves dependents to the queue) is left to RQ.
        if status is not None and status not in (*DEAD, JobStatus.DEFERRED):
            return job, False
        upstream: Job | None = None
        upstream_new = False
        if block.z >= layer.root_zoom:  # the parent tile is itself generated
            upstream, upstream_new = self._ensure(layer, block.upstream(), client)
            if job_status(upstream) == JobStatus.FAILED:
                return upstream, False
        if status == JobStatus.DEFERRED and not upstream_new:
            return job, False  # its upstream job is live, or just stored the parent
        if job is not None:
            delete_job(job)
        if client is not None:
            self._charge(client, block)
        return self._enqueue(block, upstream), True

    def _enqueue(self, block: Block, upstream: Job | None) -> Job:
        s = self.settings
        log.info("enqueue block %s (after %s)", block.key, upstream.id if upstream else "-")
        return BlockJob(block).enqueue(
            self.queue,
            upstream,
            timeout=s.job_timeout,
            retries=s.job_retries,
            backoff=s.retry_backoff,
            failure_ttl=s.failure_cooldown,
        )

    def _charge(self, client: str, block: Block) -> None:
        s = self.settings
        charged = BlockJob(block).id
        args: list[str | float] = [s.max_outstanding_per_client, charged, time.time(),
                                   s.job_timeout * 4, Job.redis_job_namespace_prefix,
                                   CHARGE_GRACE_S]  # fmt: skip
        outstanding = int(self._charge_script(keys=[client_key(client)], args=args))
        if outstanding < 0:
            raise RateLimited(-outstanding - 1, s.max_outstanding_per_client)

    def fetch(self, block: Block) -> Job | None:
        return BlockJob(block).fetch(self.redis)

    def state(self, block: Block, job: Job | None = None) -> BlockState:
        if self.store.has_block(block):
            return BlockState(State.READY)
        job = job or self.fetch(block)
        if job is None:
            return BlockState(State.PENDING)
        # A job deferred on a failed ancestor never runs: the ancestor's failure is the answer.
        for _ in range(MAX_CHAIN):
            upstream = job.dependency if job_status(job) == JobStatus.DEFERRED else None
            if upstream is None:
                break
            job = upstream
        if job_status(job) == JobStatus.FAILED:
            result = job.latest_result()
            return BlockState(
                State.FAILED,
                job.id,
                reason=public_reason(result.exc_string if result else None),
                retry_after=max(1, self.redis.ttl(job.key) or self.settings.failure_cooldown),
            )
        return BlockState(State.PENDING, job.id)

    def replan(self, layer: Layer, removed: Callable[[Block], bool]) -> int:
        """After blocks were removed from the store, the jobs waiting below them would run
        without their reference and fail: drop those jobs and ensure their blocks again,
        parents first, which queues the removed ancestors they need. Jobs already running get
        their ancestors queued, so their retry finds the reference. Returns the jobs re-planned."""
        q = self.queue
        waiting = {*q.get_job_ids(), *q.deferred_job_registry.get_job_ids(),
                   *q.scheduled_job_registry.get_job_ids()}  # fmt: skip
        started = set(q.started_job_registry.get_job_ids())
        below: list[Block] = []
        for job_id in sorted(waiting | started):
            block_job = BlockJob.from_id(job_id)
            if block_job is None:
                continue
            block = block_job.block
            if block.layer != layer.name or not removed(block):
                continue
            if job_id in started:
                if block.z >= layer.root_zoom:
                    self.ensure(layer, block.upstream())
                continue
            job = self.fetch(block)
            if job is not None:
                delete_job(job)
            below.append(block)
        for block in sorted(below, key=lambda b: b.z):
            self.ensure(layer, block)
        if below:
            log.info("re-planned %d queued blocks of layer %s below removed tiles", len(below),
                     layer.name)  # fmt: skip
        return len(below)

    def queue_depth(self) -> dict[str, int]:
        q = self.queue
        return {
            "queued": q.count,
            "deferred": q.deferred_job_registry.count,
            "scheduled": q.scheduled_job_registry.count,
            "started": q.started_job_registry.count,
        }


def public_reason(exc_string: str | None) -> str:
    """What a client may learn of a failed block: the kind of failure, never exception classes,
    paths or URLs (which may carry keys); the worker's log has the traceback."""
    text = exc_string or ""
    if "ImageryError" in text:
        status = re.search(r"HTTP (\d{3})", text)
        return "reading the imagery failed" + (
            f" (the imagery server answered {status.group(1)})" if status else ""
        )
    if "MissingReference" in text:
        return "the cascade reference above it is missing"
    return "the generator failed"
