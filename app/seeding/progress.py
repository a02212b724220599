"""Seed progress in Redis, the hooks workers call as blocks are stored or given up, and a seed's
record as the API shows it (so a seed outlives the API process that started it).

Its Redis keys are part of the API-worker contract (`app.blockjob`: SEEDS_KEY, ACTIVE_SEEDS_KEY,
seed_key, seed_pending_key).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from redis import Redis
from rq.job import JobStatus

from app.blockjob import (
    ACTIVE_SEEDS_KEY,
    BlockJob,
    Completion,
    Outcome,
    delete_job,
    job_status,
    seed_key,
    seed_pending_key,
)
from app.tiles import Block

ACTIVE_STATUSES = ("queued", "running")
COUNTERS = ("done", "failed", "generated", "skipped")

# Counts one block of a seed once (HDEL decides who counts it: a worker or the enqueuer), then
# finishes the seed when nothing is pending and every block has been enqueued.
# KEYS: seed hash, pending hash, active set. ARGV: block key ('' = only check), outcome
# (generated | exists | skipped | failed), now, seed id.
FINISH_SCRIPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
local counted = 0
if ARGV[1] ~= '' then
  local n = redis.call('HGET', KEYS[2], ARGV[1])
  if n then
    redis.call('HDEL', KEYS[2], ARGV[1])
    counted = 1
    local outcome = ARGV[2]
    local kind = 'done'
    if outcome == 'failed' then kind = 'failed' end
    redis.call('HINCRBY', KEYS[1], kind .. '_blocks', 1)
    redis.call('HINCRBY', KEYS[1], kind .. '_tiles', n)
    if outcome == 'generated' or outcome == 'skipped' then
      redis.call('HINCRBY', KEYS[1], outcome .. '_blocks', 1)
      redis.call('HINCRBY', KEYS[1], outcome .. '_tiles', n)
    end
    if outcome ~= 'skipped' then
      local worked = redis.call('HINCRBY', KEYS[1], 'worker_tiles', n)
      if status == 'queued' then
        status = 'running'
        redis.call('HSET', KEYS[1], 'status', status, 'started_at', ARGV[3],
                   'rate_base_tiles', worked)
      end
    end
  end
end
if (status == 'queued' or status == 'running') and redis.call('HGET', KEYS[1], 'enqueued') == '1'
   and redis.call('HLEN', KEYS[2]) == 0 then
  local final = 'done'
  if tonumber(redis.call('HGET', KEYS[1], 'failed_blocks')) > 0 then final = 'failed' end
  redis.call('HSET', KEYS[1], 'status', final, 'finished_at', ARGV[3])
  redis.call('HSETNX', KEYS[1], 'started_at', ARGV[3])
  redis.call('SREM', KEYS[3], ARGV[4])
end
return counted
"""


def finish(redis: Redis, seed_id: str, block_key: str = "", outcome: str = "") -> bool:
    keys = [seed_key(seed_id), seed_pending_key(seed_id), ACTIVE_SEEDS_KEY]
    args = [block_key, outcome, repr(time.time()), seed_id]
    return bool(redis.eval(FINISH_SCRIPT, 3, *keys, *args))


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def active_seeds(redis: Redis) -> list[str]:
    return sorted(text(m) for m in redis.smembers(ACTIVE_SEEDS_KEY))


def block_of_key(block_key: str) -> Block:
    layer, *zxy = block_key.split(":")
    z, x, y = (int(v) for v in zxy)
    return Block(layer, z, x, y)


# --- what workers report (app.blockjob.completed) ---


def on_completion(redis: Redis, completion: Completion) -> None:
    """Count a block job's end for the seeds waiting on it (a listener of
    `app.blockjob.completed`); a try that will be retried changes nothing yet."""
    if completion.outcome == Outcome.FAILED:
        block_failed(redis, completion.block)
    elif completion.outcome != Outcome.RETRYING:
        block_stored(redis, completion.block, completion.outcome == Outcome.GENERATED)


def block_stored(redis: Redis, block: Block, generated: bool) -> None:
    """A worker stored the block (or found it stored): count it for every seed waiting on it."""
    for seed_id in active_seeds(redis):
        finish(redis, seed_id, block.key, "generated" if generated else "exists")


def block_failed(redis: Redis, block: Block) -> None:
    """A worker gave the block up: it and every pending block below it (which needed it as
    reference, directly or not, and will never run) fail for the seeds waiting on them."""
    below: set[str] = set()
    for seed_id in active_seeds(redis):
        finish(redis, seed_id, block.key, "failed")
        for key in map(text, redis.hkeys(seed_pending_key(seed_id))):
            if descends_from(key, block):
                finish(redis, seed_id, key, "failed")
                below.add(key)
    drop_deferred_jobs(redis, below)


def drop_deferred_jobs(redis: Redis, block_keys: Iterable[str]) -> int:
    """Delete the jobs of these blocks still waiting on an upstream job that failed for good:
    RQ never enqueues the dependents of a failed job, so they would stay deferred forever. A
    later miss enqueues the block again once the failure's cooldown is over
    (`BlockQueue.ensure`)."""
    dropped = 0
    for key in block_keys:
        job = BlockJob(block_of_key(key)).fetch(redis)
        if job is not None and job_status(job) == JobStatus.DEFERRED:
            delete_job(job)
            dropped += 1
    return dropped


def descends_from(block_key: str, ancestor: Block) -> bool:
    block = block_of_key(block_key)
    d = block.z - ancestor.z
    return (
        block.layer == ancestor.layer
        and d > 0
        and (block.x >> d, block.y >> d) == (ancestor.x, ancestor.y)
    )


# --- a seed as the API shows it ---


def describe(rec: dict[str, str], base_url: str = "") -> dict:
    """A seed record as the API shows it: totals, progress, times and the measured rate."""
    now = time.time()

    def num(field: str) -> int:
        return int(rec.get(field, 0))

    def when(field: str) -> str | None:
        t = rec.get(field)
        if not t:
            return None
        return datetime.fromtimestamp(float(t), UTC).isoformat(timespec="milliseconds")

    counts = {
        unit: {
            "total": num(f"total_{unit}"),
            **{c: num(f"{c}_{unit}") for c in COUNTERS},
            "pending": num(f"total_{unit}") - num(f"done_{unit}") - num(f"failed_{unit}"),
        }
        for unit in ("blocks", "tiles")
    }
    rate = eta = None
    started, status = rec.get("started_at"), rec["status"]
    if started and status in ACTIVE_STATUSES:
        elapsed = now - float(started)
        measured = num("worker_tiles") - num("rate_base_tiles")
        if measured > 0 and elapsed > 0:
            rate = measured / elapsed
            eta = round(counts["tiles"]["pending"] / rate, 1)
    elif started and rec.get("finished_at"):
        elapsed = float(rec["finished_at"]) - float(started)
        rate = num("worker_tiles") / elapsed if elapsed > 0 else None
    total = counts["tiles"]["total"]
    done = counts["tiles"]["done"] + counts["tiles"]["failed"]
    return {
        "id": rec["id"],
        "status": status,
        "layer": rec["layer"],
        "bbox": json.loads(rec["bbox"]),
        "minzoom": int(rec["minzoom"]),
        "maxzoom": int(rec["maxzoom"]),
        **counts,
        "progress": round(done / total, 4) if total else 1.0,
        "enqueued": rec.get("enqueued") == "1",
        "rate_tiles_per_s": round(rate, 3) if rate is not None else None,
        "eta_s": eta,
        "created_at": when("created_at"),
        "started_at": when("started_at"),
        "finished_at": when("finished_at"),
        "status_url": f"{base_url}/seed/{rec['id']}",
    }
