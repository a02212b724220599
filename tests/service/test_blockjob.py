"""The API-worker contract (app/blockjob.py): job ids, arguments, events, the completion hook."""

from __future__ import annotations

import json
import time

import pytest
from redis import Redis
from rq import Queue

from app.blockjob import (
    EVENTS_CHANNEL,
    JOB_FUNCTION,
    METRICS_GENERATION_KEY,
    BlockJob,
    Completion,
    Outcome,
    completed,
    delete_job,
    job_status,
)
from app.store import FileTileStore
from app.tiles import Block
from tests.conftest import KAMPALA_LAYER


@pytest.fixture
def redis(redis_url: str):
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.parametrize("layer", ["demo", "my_layer_2", "a_1_2_3"])
def test_a_job_id_names_its_block_and_back(layer):
    job = BlockJob(Block(layer, 17, 74520, 37981))
    assert job.id == f"block_{layer}_17_74520_37981"
    assert BlockJob.from_id(job.id) == job


@pytest.mark.parametrize("job_id", ["seed_x_1_2_3", "block_demo_1_2", "block_demo_1_x_3", "x"])
def test_other_job_ids_name_no_block(job_id):
    assert BlockJob.from_id(job_id) is None


def test_the_enqueued_job_carries_its_block_and_runs_the_worker_function(redis):
    block = Block("demo", 15, 18630, 9495)
    queue = Queue("contract-test", connection=redis)
    upstream = BlockJob(block.upstream()).enqueue(
        queue, None, timeout=60, retries=2, backoff=2, failure_ttl=30
    )
    rq_job = BlockJob(block).enqueue(
        queue, upstream, timeout=60, retries=2, backoff=2, failure_ttl=30
    )
    assert rq_job.func_name == JOB_FUNCTION and rq_job.id == BlockJob(block).id
    assert BlockJob.of(queue.fetch_job(rq_job.id)) == BlockJob(block)
    assert rq_job.dependency_ids == [upstream.id] and rq_job.retries_left == 2
    assert rq_job.retry_intervals == [2, 4]
    # A job queued by the version before the Block argument (layer, z, x, y) is still read.
    old = queue.enqueue_call(JOB_FUNCTION, args=("demo", 14, 7, 9), job_id="block_demo_14_7_9")
    assert BlockJob.of(old) == BlockJob(Block("demo", 14, 7, 9))


def test_a_job_deleted_by_another_process_reads_as_gone(redis):
    # Two API processes (or a seed's cancel and a truncation) may delete one job: the second
    # finds it gone between fetch and delete, which must not fail its request.
    block = Block("demo", 15, 18630, 9497)
    queue = Queue("contract-vanish", connection=redis)
    BlockJob(block).enqueue(queue, None, timeout=60, retries=0, backoff=2, failure_ttl=30)
    job = BlockJob(block).fetch(redis)
    assert job is not None and job_status(job) == "queued"
    other = BlockJob(block).fetch(redis)
    other.delete()
    assert job_status(job) is None
    delete_job(job)  # no error: already gone
    assert BlockJob(block).fetch(redis) is None and job_status(None) is None


def test_a_generated_block_is_counted_and_announced_once(redis):
    block = Block("demo", 15, 18630, 9495)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(EVENTS_CHANNEL)
    pubsub.get_message(timeout=1)
    completed(redis, Completion(block, Outcome.GENERATED, 0.3))
    completed(redis, Completion(block, Outcome.EXISTS))  # a duplicate job: no event, no count
    completed(redis, Completion(block, Outcome.RETRYING))
    completed(redis, Completion(block, Outcome.FAILED))
    message = pubsub.get_message(timeout=2)
    assert message is not None and pubsub.get_message(timeout=0.2) is None
    assert json.loads(message["data"]) == {
        "layer": "demo",
        "block": [15, 18630, 9495],
        "tiles": [[16, 37260, 18990], [16, 37261, 18990], [16, 37260, 18991], [16, 37261, 18991]],
    }
    counts = {k.decode(): int(v) for k, v in redis.hgetall(METRICS_GENERATION_KEY).items()}
    assert counts == {"generated_blocks": 1, "retries": 1, "failures": 1}
    pubsub.close()


@pytest.mark.slow
def test_a_job_queued_before_the_block_argument_still_generates(make_settings, workers):
    # An upgrade finds jobs queued as (layer, z, x, y): the worker still renders and counts them.
    settings = make_settings([KAMPALA_LAYER])
    redis = Redis.from_url(settings.redis_url)
    block = Block("kampala", 18, 154803, 130818)  # the layer's root block
    Queue(settings.queue_name, connection=redis).enqueue_call(
        JOB_FUNCTION, args=(block.layer, block.z, block.x, block.y), job_id=BlockJob(block).id
    )
    workers.start(settings)
    store = FileTileStore(settings.tiles_dir)
    deadline = time.monotonic() + 120

    def generated() -> int:  # counted after the tiles are stored: wait for both
        return int(redis.hget(METRICS_GENERATION_KEY, "generated_blocks") or 0)

    while generated() == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.has_block(block) and generated() == 1
    redis.close()
