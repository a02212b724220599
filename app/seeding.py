"""Pre-seeding and truncation: a bbox over a zoom range as blocks, enqueued top-down, with its
progress kept in Redis (so a seed outlives the API process that started it).

Keys: `mapcascade:seed:{id}` (hash: request, totals, counters, times), `...:{id}:pending` (hash:
block key -> tiles of the seed it renders), `mapcascade:seeds` (zset of all ids by creation) and
`mapcascade:seeds:active` (set of ids still queued or running, which workers update).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mercantile
from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.cascade import Cascade, State, job_id
from app.errors import InvalidRequest, NotFound
from app.settings import MAX_LAT, Layer
from app.store import FileTileStore
from app.tiles import Block

log = logging.getLogger(__name__)

BBox = tuple[float, float, float, float]
SEEDS_KEY = "mapcascade:seeds"
ACTIVE_KEY = "mapcascade:seeds:active"
BATCH = 200  # blocks registered and enqueued per step; the unit of resumption
LOCK_TTL = 30  # seconds an enqueuer's lock outlives a stalled or killed API process
ACTIVE_STATUSES = ("queued", "running")
COUNTERS = ("done", "failed", "generated", "skipped")


@dataclass(frozen=True)
class TileRect:
    """The tiles x0..x1, y0..y1 (inclusive) of zoom z."""

    z: int
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def count(self) -> int:
        return (self.x1 - self.x0 + 1) * (self.y1 - self.y0 + 1)

    def parents(self) -> TileRect:
        return TileRect(self.z - 1, self.x0 >> 1, self.y0 >> 1, self.x1 >> 1, self.y1 >> 1)

    def descendants(self, zoom: int) -> TileRect:
        d = zoom - self.z
        return TileRect(
            zoom, self.x0 << d, self.y0 << d, ((self.x1 + 1) << d) - 1, ((self.y1 + 1) << d) - 1
        )

    def whole_blocks(self) -> TileRect:
        """Widened to whole sibling quads: the store writes and regenerates blocks, not tiles."""
        return TileRect(self.z, self.x0 & ~1, self.y0 & ~1, self.x1 | 1, self.y1 | 1)

    def overlap(self, block: Block) -> int:
        """How many of the block's four children lie in this rectangle."""
        cx = min(2 * block.x + 1, self.x1) - max(2 * block.x, self.x0) + 1
        cy = min(2 * block.y + 1, self.y1) - max(2 * block.y, self.y0) + 1
        return max(cx, 0) * max(cy, 0)


def tile_rect(bbox: BBox, zoom: int) -> TileRect:
    """The tiles `mercantile.tiles` yields for the bbox, counted without enumerating them."""
    west, south, east, north = bbox
    ul = mercantile.tile(west, north, zoom)
    lr = mercantile.tile(east - mercantile.LL_EPSILON, south + mercantile.LL_EPSILON, zoom)
    return TileRect(zoom, ul.x, ul.y, lr.x, lr.y)


@dataclass(frozen=True)
class SeedPlan:
    layer: str
    bbox: BBox  # already clipped to the layer's bounds
    minzoom: int
    maxzoom: int

    @property
    def rects(self) -> list[TileRect]:
        return [tile_rect(self.bbox, z) for z in range(self.minzoom, self.maxzoom + 1)]

    @property
    def tiles(self) -> int:
        return sum(r.count for r in self.rects)

    @property
    def blocks(self) -> int:
        return sum(r.parents().count for r in self.rects)

    def iter_blocks(self) -> Iterator[tuple[Block, int]]:
        """Each block with its tile count in the seed, coarse zooms first (parents first)."""
        for rect in self.rects:
            p = rect.parents()
            for y in range(p.y0, p.y1 + 1):
                for x in range(p.x0, p.x1 + 1):
                    block = Block(self.layer, p.z, x, y)
                    yield block, rect.overlap(block)


def check_area(layer: Layer, bbox: BBox, minzoom: int, maxzoom: int) -> BBox:
    """Validate a request's area and zooms against the layer; returns the bbox clipped to it."""
    west, south, east, north = bbox
    if not all(math.isfinite(v) for v in bbox):
        raise InvalidRequest("bbox values must be finite numbers")
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        raise InvalidRequest(f"longitudes must be within -180..180, got west={west}, east={east}")
    if not (-MAX_LAT <= south <= MAX_LAT and -MAX_LAT <= north <= MAX_LAT):
        raise InvalidRequest(
            f"latitudes must be within ±85.0511 (the Web Mercator limit), "
            f"got south={south}, north={north}"
        )
    if west >= east:
        raise InvalidRequest(
            f"bbox west ({west}) must be less than east ({east}); "
            "a bbox crossing the antimeridian is refused: split it in two"
        )
    if south >= north:
        raise InvalidRequest(f"bbox south ({south}) must be less than north ({north})")
    if minzoom > maxzoom:
        raise InvalidRequest(f"minzoom ({minzoom}) must not exceed maxzoom ({maxzoom})")
    if minzoom < layer.root_zoom or maxzoom > layer.max_zoom:
        raise InvalidRequest(
            f"zooms {minzoom}-{maxzoom} are outside layer {layer.name!r}, "
            f"which has zooms {layer.root_zoom}-{layer.max_zoom}"
        )
    lw, ls, le, ln = layer.bounds
    clipped = (max(west, lw), max(south, ls), min(east, le), min(north, ln))
    if clipped[0] >= clipped[2] or clipped[1] >= clipped[3]:
        raise InvalidRequest(
            f"bbox {list(bbox)} does not intersect layer {layer.name!r}, "
            f"whose bounds are {list(layer.bounds)}"
        )
    return clipped


def plan_seed(layer: Layer, bbox: BBox, minzoom: int, maxzoom: int, max_tiles: int) -> SeedPlan:
    plan = SeedPlan(layer.name, check_area(layer, bbox, minzoom, maxzoom), minzoom, maxzoom)
    if plan.tiles > max_tiles:
        raise InvalidRequest(
            f"the seed covers {plan.tiles} tiles, over the limit of {max_tiles} tiles per seed "
            "(MAPCASCADE_MAX_SEED_TILES): use a smaller bbox or fewer zooms",
            tiles=plan.tiles,
            limit=max_tiles,
        )
    return plan


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


def seed_key(seed_id: str) -> str:
    return f"mapcascade:seed:{seed_id}"


def pending_key(seed_id: str) -> str:
    return f"mapcascade:seed:{seed_id}:pending"


def finish(redis: Redis, seed_id: str, block_key: str = "", outcome: str = "") -> bool:
    keys = [seed_key(seed_id), pending_key(seed_id), ACTIVE_KEY]
    args = [block_key, outcome, repr(time.time()), seed_id]
    return bool(redis.eval(FINISH_SCRIPT, 3, *keys, *args))


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def active_seeds(redis: Redis) -> list[str]:
    return sorted(text(m) for m in redis.smembers(ACTIVE_KEY))


# --- hooks the worker calls (worker/jobs.py) ---


def block_stored(redis: Redis, block: Block, generated: bool) -> None:
    """A worker stored the block (or found it stored): count it for every seed waiting on it."""
    for seed_id in active_seeds(redis):
        finish(redis, seed_id, block.key, "generated" if generated else "exists")


def block_failed(redis: Redis, block: Block) -> None:
    """A worker gave the block up: it and every pending block below it (which needed it as
    reference, directly or not, and will never run) fail for the seeds waiting on them."""
    for seed_id in active_seeds(redis):
        finish(redis, seed_id, block.key, "failed")
        for key in map(text, redis.hkeys(pending_key(seed_id))):
            if descends_from(key, block):
                finish(redis, seed_id, key, "failed")


def descends_from(block_key: str, ancestor: Block) -> bool:
    layer, *zxy = block_key.split(":")
    z, x, y = (int(v) for v in zxy)
    d = z - ancestor.z
    return layer == ancestor.layer and d > 0 and (x >> d, y >> d) == (ancestor.x, ancestor.y)


# --- seeds as the API sees them ---


class Seeds:
    """Create, read and cancel seeds; enqueue their blocks (in `SeedRunner` threads)."""

    def __init__(self, redis: Redis, cascade: Cascade):
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
            pipe.sadd(ACTIVE_KEY, seed_id)
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
            pipe.srem(ACTIVE_KEY, seed_id)
            pipe.execute()
        keys = [text(k) for k in self.redis.hkeys(pending_key(seed_id))]
        cancelled = self.cancel_jobs(keys)
        log.info("seed %s cancelled: %d queued blocks dropped", seed_id, cancelled)
        return self.record(seed_id)

    def cancel_jobs(self, block_keys: Iterable[str]) -> int:
        """Cancel the not yet started jobs of these blocks, unless another seed waits on them."""
        others = active_seeds(self.redis)
        cancelled = 0
        for key in block_keys:
            if any(self.redis.hexists(pending_key(other), key) for other in others):
                continue
            layer, *zxy = key.split(":")
            try:
                job = Job.fetch(job_id(Block(layer, *map(int, zxy))), connection=self.redis)
            except NoSuchJobError:
                continue
            if job.get_status() in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
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
                pipe.hset(pending_key(seed_id), items=new)
                pipe.hset(seed_key(seed_id), "registered", batch[-1][0] + 1)
                pipe.execute()
        for _, block, _ in batch:
            state = self.cascade.ensure(layer, block, client=None)
            if state.state == State.READY:
                finish(self.redis, seed_id, block.key, "skipped")
            elif state.state == State.FAILED:
                finish(self.redis, seed_id, block.key, "failed")
        self.redis.hset(seed_key(seed_id), "ensured", batch[-1][0] + 1)
        if self.redis.hget(seed_key(seed_id), "status") == b"cancelled":
            self.cancel_jobs(b.key for _, b, _ in batch)  # enqueued while cancel swept
            return False
        return True


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
                f"mapcascade:seed:{seed_id}:enqueuer", timeout=LOCK_TTL, thread_local=False
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
                self.seeds.redis.srem(ACTIVE_KEY, seed_id)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for thread in list(self.threads.values()):
            thread.join(timeout)


# --- truncation ---


def truncate(store: FileTileStore, layer: Layer, bbox: BBox, minzoom: int) -> dict[str, int]:
    """Remove the tiles of the bbox at minzoom (widened to whole blocks) and all their
    descendants down to the layer's max zoom, with the blocks' metadata; returns the counts."""
    top = tile_rect(bbox, minzoom).whole_blocks()
    root = store.root / layer.name
    tiles = blocks = 0
    for z in range(minzoom, layer.max_zoom + 1):
        rect = top.descendants(z)
        # Metadata first: without it the block counts as missing and is regenerated on a miss.
        blocks += _remove_rect(root / "blocks" / str(z - 1), rect.parents(), ".json")
        tiles += _remove_rect(root / str(z), rect, ".png")
    log.info("truncated %d tiles of layer %s from %s at z%d down", tiles, layer.name, bbox, minzoom)
    return {"tiles": tiles, "blocks": blocks}


def _remove_rect(folder: Path, rect: TileRect, suffix: str) -> int:
    """Unlink `{folder}/{x}/{y}{suffix}` inside the rectangle, visiting only existing folders."""
    if not folder.is_dir():
        return 0
    removed = 0
    for column in os.scandir(folder):
        if not (column.name.isdigit() and rect.x0 <= int(column.name) <= rect.x1):
            continue
        for entry in os.scandir(column.path):
            stem = entry.name.removesuffix(suffix)
            if stem != entry.name and stem.isdigit() and rect.y0 <= int(stem) <= rect.y1:
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
        with contextlib.suppress(OSError):
            os.rmdir(column.path)  # only succeeds when the column is now empty
    return removed
