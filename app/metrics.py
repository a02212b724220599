"""Prometheus metrics: request counters in the API process, generation counters in Redis.

Workers run on other processes and hosts, so what they measure is kept in Redis and exported
by whichever API process is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from redis import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.blockjob import METRICS_DURATION_KEY, METRICS_GENERATION_KEY, Completion, Outcome

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


def on_completion(redis: Redis, completion: Completion) -> None:
    """Count a block job's try (a listener of `app.blockjob.completed`)."""
    if completion.outcome == Outcome.GENERATED:
        record_generation(redis, completion.duration_s or 0.0)
    elif completion.outcome in (Outcome.RETRYING, Outcome.FAILED):
        field = "failures" if completion.outcome == Outcome.FAILED else "retries"
        redis.hincrby(METRICS_GENERATION_KEY, field, 1)


def record_generation(redis: Redis, seconds: float) -> None:
    with redis.pipeline() as p:
        p.hincrby(METRICS_GENERATION_KEY, "generated_blocks", 1)
        for bound in DURATION_BUCKETS:
            if seconds <= bound:
                p.hincrby(METRICS_DURATION_KEY, str(bound), 1)
        p.hincrby(METRICS_DURATION_KEY, "+Inf", 1)
        p.hincrbyfloat(METRICS_DURATION_KEY, "sum", seconds)
        p.execute()


class Metrics:
    """Per-app registry, so several apps in one test process do not share counters."""

    def __init__(self, redis: Redis, queue_depth):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mapcascade_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.cache = Counter(
            "mapcascade_tile_cache",
            "Tile requests by cache result",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(_RedisCollector(redis, queue_depth))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RedisCollector:
    def __init__(self, redis: Redis, queue_depth):
        self.redis = redis
        self.queue_depth = queue_depth

    def collect(self) -> Iterator:
        gen = {_text(k): int(v) for k, v in self.redis.hgetall(METRICS_GENERATION_KEY).items()}
        yield CounterMetricFamily(
            "mapcascade_generated_blocks",
            "Blocks generated and stored",
            gen.get("generated_blocks", 0),
        )
        yield CounterMetricFamily(
            "mapcascade_generation_failures",
            "Blocks given up after their last retry",
            gen.get("failures", 0),
        )
        yield CounterMetricFamily(
            "mapcascade_generation_retries",
            "Failed generation attempts that were retried",
            gen.get("retries", 0),
        )
        raw = {_text(k): float(v) for k, v in self.redis.hgetall(METRICS_DURATION_KEY).items()}
        buckets = [(str(b), raw.get(str(b), 0.0)) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", raw.get("+Inf", 0.0)))
        yield HistogramMetricFamily(
            "mapcascade_generation_duration_seconds",
            "Wall time of one block generation (imagery, reference, model, writing)",
            buckets=buckets,
            sum_value=raw.get("sum", 0.0),
        )
        depth = GaugeMetricFamily(
            "mapcascade_queue_depth", "Blocks waiting by state", labels=["state"]
        )
        for state, count in self.queue_depth().items():
            depth.add_metric([state], count)
        yield depth


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RequestMetricsMiddleware:
    """Counts every response by route template (not raw path, to bound label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
