"""Seeds as the API handles them: create, read and cancel, and the background enqueuer that
registers and enqueues a seed's blocks top-down in resumable batches."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable

from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock
from rq.job import JobStatus

from app.blockjob import (
    ACTIVE_SEEDS_KEY,
    SEEDS_KEY,
    BlockJob,
    job_status,
    seed_enqueuer_lock,
    seed_key,
    seed_pending_key,
)
from app.cascade import BlockQueue, State
from app.errors import NotFound
from app.seeding.plan import SeedPlan
from app.seeding.progress import (
    ACTIVE_STATUSES,
    COUNTERS,
    active_seeds,
    block_of_key,
    drop_deferred_jobs,
    finish,
    text,
)
from app.settings import Layer
from app.tiles import Block

log = logging.getLogger(__name__)

BATCH = 200  # blocks registered and enqueued per step; the unit of resumption
LOCK_TTL = 30  # seconds an enqueuer's lock outlives a stalled or killed API process


class Seeds:
    """Create, read and cancel seeds; enqueue their blocks (in `SeedRunner` threads)."""

    def __init__(self, redis: Redis, cascade: BlockQueue):
        self.redis = redis
        self.cascade = cascade

    def create(self, plan: SeedPlan) -> str:
        seed_id = secrets.token_hex(8)  # unguessable: reading a seed by id needs no token
        now = time.time()
        record: dict[str, str | int | float] = {
            "id": seed_id,
            "layer": plan.layer,
            "bbox": json.dumps(list(plan.bbox)),
            "minzoom": plan.minzoom,
            "maxzoom": plan.maxzoom,
            "status": "queued",
            "created_at": repr(now),
            "total_blocks": plan.blocks,
            "total_tiles": plan.tiles,
            "registered": 0,
            "ensured": 0,
            "enqueued": 0,
            "worker_tiles": 0,
        }
        for counter in COUNTERS:
            record[f"{counter}_blocks"] = record[f"{counter}_tiles"] = 0
        with self.redis.pipeline() as pipe:
            pipe.hset(seed_key(seed_id), items=[v for item in record.items() for v in item])
            pipe.zadd(SEEDS_KEY, {seed_id: now})
            pipe.sadd(ACTIVE_SEEDS_KEY, seed_id)
            pipe.execute()
        return seed_id

    def record(self, seed_id: str) -> dict[str, str]:
        raw = self.redis.hgetall(seed_key(seed_id))
        if not raw:
            raise NotFound(f"no seed {seed_id!r}")
        return {text(k): text(v) for k, v in raw.items()}

    def ids(self, limit: int = 100) -> list[str]:
        return [text(m) for m in self.redis.zrevrange(SEEDS_KEY, 0, limit - 1)]

    def cancel(self, seed_id: str) -> dict[str, str]:
        """No new block of the seed starts; running ones finish and their tiles stay."""
        rec = self.record(seed_id)
        if rec["status"] not in ACTIVE_STATUSES:
            return rec  # cancelling a finished seed changes nothing
        with self.redis.pipeline() as pipe:
            pipe.hset(
                seed_key(seed_id), mapping={"status": "cancelled", "finished_at": repr(time.time())}
            )
            pipe.srem(ACTIVE_SEEDS_KEY, seed_id)
            pipe.execute()
        keys = [text(k) for k in self.redis.hkeys(seed_pending_key(seed_id))]
        cancelled = self.cancel_jobs(keys)
        log.info("seed %s cancelled: %d queued blocks dropped", seed_id, cancelled)
        return self.record(seed_id)

    def cancel_jobs(self, block_keys: Iterable[str]) -> int:
        """Cancel the not yet started jobs of these blocks, unless another seed waits on them."""
        others = active_seeds(self.redis)
        cancelled = 0
        for key in block_keys:
            if any(self.redis.hexists(seed_pending_key(other), key) for other in others):
                continue
            job = BlockJob(block_of_key(key)).fetch(self.redis)
            waiting = (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
            if job is not None and job_status(job) in waiting:
                job.cancel()
                cancelled += 1
        return cancelled

    def enqueue(self, seed_id: str, lock: Lock, stop: threading.Event) -> None:
        """Register and enqueue the seed's blocks in batches, resuming where a previous
        enqueuer (e.g. of an API process that was restarted) stopped."""
        rec = self.record(seed_id)
        layer = self.cascade.settings.layers[rec["layer"]]
        bbox = tuple(json.loads(rec["bbox"]))
        plan = SeedPlan(rec["layer"], bbox, int(rec["minzoom"]), int(rec["maxzoom"]))  # type: ignore[arg-type]
        registered, ensured = int(rec["registered"]), int(rec["ensured"])
        batch: list[tuple[int, Block, int]] = []
        for i, (block, tiles) in enumerate(plan.iter_blocks()):
            if i < ensured:
                continue
            batch.append((i, block, tiles))
            if len(batch) == BATCH:
                if not self._enqueue_batch(seed_id, layer, batch, registered, lock, stop):
                    return
                registered = max(registered, batch[-1][0] + 1)
                batch = []
        if batch and not self._enqueue_batch(seed_id, layer, batch, registered, lock, stop):
            return
        self.redis.hset(seed_key(seed_id), "enqueued", 1)
        finish(self.redis, seed_id)  # every block may already be done (or stored before)
        log.info("seed %s: all %s blocks enqueued", seed_id, rec["total_blocks"])

    def _enqueue_batch(
        self,
        seed_id: str,
        layer: Layer,
        batch: list[tuple[int, Block, int]],
        registered: int,
        lock: Lock,
        stop: threading.Event,
    ) -> bool:
        status = self.redis.hget(seed_key(seed_id), "status")
        if stop.is_set() or status not in (b"queued", b"running"):
            return False
        try:
            lock.reacquire()
        except LockError:
            log.warning("seed %s: lost the enqueue lock; another process goes on", seed_id)
            return False
        new = [v for i, b, tiles in batch if i >= registered for v in (b.key, tiles)]
        if new:  # registered before enqueued, so a block done at once is counted exactly once
            with self.redis.pipeline() as pipe:
                pipe.hset(seed_pending_key(seed_id), items=new)
                pipe.hset(seed_key(seed_id), "registered", batch[-1][0] + 1)
                pipe.execute()
        for _, block, _ in batch:
            state = self.cascade.ensure(layer, block, client=None)
            if state.state == State.READY:
                finish(self.redis, seed_id, block.key, "skipped")
            elif state.state == State.FAILED:  # an ancestor failed within its cooldown
                finish(self.redis, seed_id, block.key, "failed")
                drop_deferred_jobs(self.redis, [block.key])
        self.redis.hset(seed_key(seed_id), "ensured", batch[-1][0] + 1)
        if self.redis.hget(seed_key(seed_id), "status") == b"cancelled":
            self.cancel_jobs(b.key for _, b, _ in batch)  # enqueued while cancel swept
            return False
        return True


class SeedRunner:
    """The enqueuer threads of one API process; one per seed, guarded by a Redis lock so that
    several API processes (or a restarted one) never enqueue the same seed twice."""

    def __init__(self, seeds: Seeds):
        self.seeds = seeds
        self.stop_event = threading.Event()
        self.threads: dict[str, threading.Thread] = {}
        self._guard = threading.Lock()

    def start(self, seed_id: str) -> bool:
        with self._guard:
            if self.stop_event.is_set() or (
                seed_id in self.threads and self.threads[seed_id].is_alive()
            ):
                return False
            lock = self.seeds.redis.lock(
                seed_enqueuer_lock(seed_id), timeout=LOCK_TTL, thread_local=False
            )
            if not lock.acquire(blocking=False, token=f"{os.getpid()}|{time.time_ns()}"):
                return False
            thread = threading.Thread(
                target=self._run, args=(seed_id, lock), name=f"seed-{seed_id}", daemon=True
            )
            self.threads[seed_id] = thread
            thread.start()
            return True

    def _run(self, seed_id: str, lock: Lock) -> None:
        try:
            self.seeds.enqueue(seed_id, lock, self.stop_event)
        except Exception:
            log.exception("seed %s: enqueueing stopped; it resumes on the next read", seed_id)
        finally:
            with contextlib.suppress(LockError):
                lock.release()

    def resume_if_needed(self, rec: dict[str, str]) -> None:
        """Pick up a seed whose enqueuer died with its process (its lock has expired)."""
        if rec["status"] in ACTIVE_STATUSES and rec.get("enqueued") != "1":
            self.start(rec["id"])

    def resume_all(self) -> None:
        for seed_id in active_seeds(self.seeds.redis):
            try:
                self.resume_if_needed(self.seeds.record(seed_id))
            except NotFound:
                self.seeds.redis.srem(ACTIVE_SEEDS_KEY, seed_id)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for thread in list(self.threads.values()):
            thread.join(timeout)
