"""The contract between the API and the workers: one block job on RQ, its id, lock, arguments,
the event it announces, the Redis keys both sides share, and the one hook a finished job calls.

Both sides import this module (it needs no torch); each name and key is defined here only.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from dataclasses import dataclass
from enum import Enum

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from app.tiles import Block

JOB_FUNCTION = "worker.jobs.generate_block"  # called with one argument: the Block
EVENTS_CHANNEL = "mapcascade:events"

# Generation metrics (app/metrics.py): hash of counters, hash of duration histogram buckets.
METRICS_GENERATION_KEY = "mapcascade:metrics:generation"
METRICS_DURATION_KEY = "mapcascade:metrics:duration"

# Seed progress (app/seeding/): every seed id by creation (zset), the ids still queued or
# running (set, which workers update), one hash per seed and one of its pending blocks.
SEEDS_KEY = "mapcascade:seeds"
ACTIVE_SEEDS_KEY = "mapcascade:seeds:active"


def seed_key(seed_id: str) -> str:
    """Hash: a seed's request, totals, counters and times."""
    return f"mapcascade:seed:{seed_id}"


def seed_pending_key(seed_id: str) -> str:
    """Hash: block key -> tiles of the seed that block renders, until it is counted."""
    return f"{seed_key(seed_id)}:pending"


def seed_enqueuer_lock(seed_id: str) -> str:
    """The lock of the one API thread that enqueues a seed's blocks."""
    return f"{seed_key(seed_id)}:enqueuer"


def client_key(client: str) -> str:
    """Sorted set: an anonymous client's charged block job ids (the miss budget)."""
    return f"mapcascade:client:{client}"


@dataclass(frozen=True)
class BlockJob:
    """The RQ job that generates one block (its four tiles), named by the block."""

    block: Block

    @property
    def id(self) -> str:
        # RQ ids allow letters, digits, _ and -; the trailing three numbers keep it unambiguous.
        b = self.block
        return f"block_{b.layer}_{b.z}_{b.x}_{b.y}"

    @classmethod
    def from_id(cls, job_id: str) -> BlockJob | None:
        """The block job an RQ job id names (None for other ids); layer names may contain _."""
        prefix, _, rest = job_id.partition("_")
        parts = rest.rsplit("_", 3)
        if prefix != "block" or len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            return None
        return cls(Block(parts[0], int(parts[1]), int(parts[2]), int(parts[3])))

    @classmethod
    def of(cls, job: Job) -> BlockJob:
        """The block job an RQ job runs, read from its id (which jobs queued by any version
        carry; before the Block argument, jobs took layer, z, x, y)."""
        found = cls.from_id(job.id)
        if found is None:
            raise TypeError(f"job {job.id} is not a block job")
        return found

    def fetch(self, redis: Redis) -> Job | None:
        """The block's RQ job, or None when there is none."""
        try:
            return Job.fetch(self.id, connection=redis)
        except NoSuchJobError:
            return None

    @property
    def lock_name(self) -> str:
        """Held by the worker generating the block; its token names that worker."""
        return f"mapcascade:lock:{self.block.key}"

    @property
    def enqueue_lock_name(self) -> str:
        """Held while one API request decides whether to enqueue the block."""
        return f"mapcascade:enqueue:{self.block.key}"

    def enqueue(
        self,
        queue: Queue,
        upstream: Job | None,
        *,
        timeout: int,
        retries: int,
        backoff: float,
        failure_ttl: int,
    ) -> Job:
        """Put the job on the queue, deferred until `upstream` (its parent's block) is done."""
        retry = None
        if retries > 0:
            intervals = [max(1, round(backoff * 2**i)) for i in range(retries)]
            retry = Retry(max=retries, interval=intervals)
        return queue.enqueue_call(
            JOB_FUNCTION,
            args=(self.block,),
            job_id=self.id,
            depends_on=upstream,
            timeout=timeout,
            retry=retry,
            result_ttl=600,
            failure_ttl=failure_ttl,
            description=f"generate block {self.block.key}",
        )

    def event(self) -> str:
        """The `block ready` message on EVENTS_CHANNEL, as /events passes it on."""
        b = self.block
        tiles = [[t.z, t.x, t.y] for t in b.children]
        return json.dumps({"layer": b.layer, "block": [b.z, b.x, b.y], "tiles": tiles})


def job_status(job: Job | None) -> JobStatus | None:
    """The job's status; None when there is no job or it vanished since it was fetched (it
    expired, or another process deleted it), which callers treat alike."""
    if job is None:
        return None
    try:
        return job.get_status()
    except InvalidJobOperation:
        return None


def delete_job(job: Job) -> None:
    """Delete a job that another process may delete first: gone is the wanted end either way."""
    with contextlib.suppress(InvalidJobOperation, NoSuchJobError):
        job.delete()


class Outcome(Enum):
    GENERATED = "generated"  # the worker drew and stored the block
    EXISTS = "exists"  # already stored (a duplicate job): nothing drawn
    RETRYING = "retrying"  # this try failed; RQ runs it again
    FAILED = "failed"  # the last try failed: the block is given up


@dataclass(frozen=True)
class Completion:
    """What a worker reports when a block job's try ends."""

    block: Block
    outcome: Outcome
    duration_s: float | None = None  # the generation's wall time (GENERATED only)


def announce(redis: Redis, completion: Completion) -> None:
    """Tell every /events viewer (app/events.py) that a generated block's tiles are stored."""
    if completion.outcome == Outcome.GENERATED:
        redis.publish(EVENTS_CHANNEL, BlockJob(completion.block).event())


# Who hears of every Completion, in order (metrics, viewers, then seeds, so a seed done is
# never seen before its last block's event). Named, not imported: they import this module.
LISTENERS = (
    "app.metrics:on_completion",
    "app.blockjob:announce",
    "app.seeding.progress:on_completion",
)


def completed(redis: Redis, completion: Completion) -> None:
    """The one hook a worker calls when a block job's try ends."""
    for listener in LISTENERS:
        module, name = listener.split(":")
        getattr(importlib.import_module(module), name)(redis, completion)
