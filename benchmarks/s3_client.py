"""S3 client overhead: N GETs and N PUTs of one tile-sized object, boto3 vs obstore, one run.

    AWS_ENDPOINT_URL=http://127.0.0.1:8333 AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
        python benchmarks/s3_client.py --bucket tiles -n 500

Each client is built once and reused (one connection pool), as the tile store does; requests
run one after another, so the figures are per-request latency (client + server). The obstore
async row runs the same requests from one event loop, as the API would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Callable

import boto3
import obstore
from obstore.store import S3Store


def timed(n: int, op: Callable[[int], object]) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        op(i)
        times.append(time.perf_counter() - start)
    return times


async def timed_async(n: int, op) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        await op(i)
        times.append(time.perf_counter() - start)
    return times


def report(name: str, times: list[float]) -> None:
    times = sorted(times)
    p50 = statistics.median(times) * 1000
    p99 = times[int(len(times) * 0.99) - 1] * 1000
    print(f"{name:24s} {len(times) / sum(times):8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bucket", required=True)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--size", type=int, default=30_000, help="object size in bytes")
    args = parser.parse_args()
    n, body = args.n, os.urandom(args.size)
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    region = os.environ.get("AWS_REGION", "us-east-1")

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    obs = S3Store(args.bucket, endpoint=endpoint, region=region,
                  client_options={"allow_http": True})  # fmt: skip
    for i in range(n):  # the objects every GET row reads
        s3.put_object(Bucket=args.bucket, Key=f"bench/get/{i}.png", Body=body)
    # One warm-up request each: connections open.
    s3.get_object(Bucket=args.bucket, Key="bench/get/0.png")["Body"].read()
    obstore.get(obs, "bench/get/0.png").bytes()

    report("boto3 GET", timed(n, lambda i: s3.get_object(
        Bucket=args.bucket, Key=f"bench/get/{i}.png")["Body"].read()))  # fmt: skip
    report("obstore GET", timed(n, lambda i: obstore.get(obs, f"bench/get/{i}.png").bytes()))

    async def get_async(i: int) -> bytes:
        return bytes(await (await obstore.get_async(obs, f"bench/get/{i}.png")).bytes_async())

    report("obstore GET (async)", asyncio.run(timed_async(n, get_async)))
    report("boto3 PUT", timed(n, lambda i: s3.put_object(
        Bucket=args.bucket, Key=f"bench/put/b{i}.png", Body=body)))  # fmt: skip
    report("obstore PUT", timed(n, lambda i: obstore.put(obs, f"bench/put/o{i}.png", body)))


if __name__ == "__main__":
    main()
