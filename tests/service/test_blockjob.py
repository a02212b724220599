"""The API-worker contract (app/blockjob.py): job ids, arguments, events, the completion hook."""

from __future__ import annotations

import json

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
)
from app.tiles import Block


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
