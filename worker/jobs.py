"""The RQ job: generate one block under its lock, store its four tiles atomically, announce it."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from PIL import Image
from rq import get_current_job

from app.blockjob import BlockJob, Completion, Outcome, completed
from app.tiles import Block
from worker import blocks
from worker.context import WorkerContext, current, worker_name

log = logging.getLogger(__name__)


def generate_block(block: Block | str, *zxy: int) -> str:
    """Entry point named by `app.blockjob.JOB_FUNCTION`; reports its end to
    `app.blockjob.completed` (metrics, /events viewers, seed progress). Jobs queued before an
    upgrade still carry (layer, z, x, y)."""
    if not isinstance(block, Block):
        z, x, y = zxy
        block = Block(block, z, x, y)
    rq_job = get_current_job()
    redis = current().redis
    try:
        completion = render_and_store(current(), block)
    except Exception:
        final = rq_job is None or not rq_job.retries_left
        completed(redis, Completion(block, Outcome.FAILED if final else Outcome.RETRYING))
        raise
    completed(redis, completion)
    return completion.outcome.value


def render_and_store(ctx: WorkerContext, block: Block) -> Completion:
    job = BlockJob(block)
    lock = ctx.redis.lock(
        job.lock_name,
        timeout=ctx.settings.job_timeout + 60,  # outlives the longest generation RQ allows
        blocking_timeout=ctx.settings.job_timeout,
    )
    # The token names the worker, so a restarted worker can free the lock of a killed one.
    if not lock.acquire(token=f"{worker_name()}|{time.time_ns()}"):
        raise TimeoutError(f"block {block.key} stayed locked by another worker")
    try:
        if ctx.store.has_block(block):  # a duplicate job, or another worker got here first
            log.info("block %s already stored", block.key)
            return Completion(block, Outcome.EXISTS)
        meta = render(ctx, block)
    finally:
        lock.release()
    return Completion(block, Outcome.GENERATED, meta["duration_s"])


def render(ctx: WorkerContext, block: Block) -> dict:
    """Generate and store the block (under its lock); returns its metadata."""
    start = time.perf_counter()
    layer = ctx.layer(block.layer)
    generator = ctx.generator(layer)
    read = blocks.store_reader(ctx.store, block.layer)
    drawn = blocks.draw_block(block, ctx.source(layer), generator, read, layer.root_zoom,
                              layer.reference_span, layer.context_margin)  # fmt: skip
    meta: dict = {
        "layer": block.layer,
        "model": generator.model_id,
        "seed": block.noise_seed(generator.model_id),
        "steps": generator.steps,
        "strength": generator.strength,
        "context_margin": layer.context_margin,
        "overzoom": drawn.imagery.overzoom,
        "nodata": drawn.request is None,
        "reference_span": drawn.reference.span,
        "reference_tiles": [[t.z, t.x, t.y] for t in drawn.reference.tiles],
    }
    if drawn.request is not None:
        meta["prompt"] = drawn.request.scale.prompt()
    meta["duration_s"] = round(time.perf_counter() - start, 4)
    meta["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    tiles = [blocks.png_bytes(t) for t in drawn.tiles]
    imagery = None  # a no-data block has none to show
    if drawn.request is not None:
        seen = blocks.cut_block(Image.fromarray(drawn.imagery.rgb), drawn.imagery.mask)
        imagery = [blocks.png_bytes(t) for t in seen]
    ctx.store.put_block(block, tiles, meta, imagery)
    log.info("block %s generated in %.2fs", block.key, meta["duration_s"])
    return meta
