"""The tile store on S3-compatible object storage (AWS S3, MinIO, SeaweedFS, R2, GCS in S3 mode).

Keys are the file store's paths under the bucket's prefix. A PUT is atomic (an object appears
whole or not at all), so the file store's guarantee carries over: the four tiles (and their
imagery) are put first, the block's metadata object last, and its presence means the block is
complete. The client is obstore (Rust, one connection pool per store): per request it took
half the time of boto3 against SeaweedFS (benchmarks/s3_client.py), and its async calls keep
the API's event loop free. Its runtime does not survive a fork: processes that read the store
are started fresh (uvicorn spawns its workers; RQ's forked scheduler never reads tiles).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from app.errors import StoreUnavailable
from app.settings import Settings
from app.store import (
    DEFAULT_REGION,
    Removed,
    S3Location,
    StoreConfigError,
    StoredTile,
    imagery_of,
    meta_key,
    store_location,
    tile_key,
)
from app.tiles import Block, Tile, TileRect

# A store that does not answer fails the request within seconds (503 + Retry-After), never
# hangs it: short connect and request timeouts, one quick retry.
CONNECT_TIMEOUT = timedelta(seconds=3)
REQUEST_TIMEOUT = timedelta(seconds=10)
RETRY = {
    "max_retries": 1,
    "retry_timeout": timedelta(seconds=5),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1),
                "base": 2},
}  # fmt: skip
PNG = {"Content-Type": "image/png"}
JSON = {"Content-Type": "application/json"}
STORE_ERRORS = (BaseError, OSError, TimeoutError)  # FileNotFoundError (no such key) is caught first

T = TypeVar("T")
log = logging.getLogger(__name__)


class S3TileStore:
    """`{prefix}/{layer}/{z}/{x}/{y}.png` plus `{prefix}/{layer}/blocks/{z}/{x}/{y}.json`."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ):
        self.bucket, self.prefix, self.endpoint = bucket, prefix.strip("/"), endpoint
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config: dict[str, Any] = {"region": region or DEFAULT_REGION}
        if endpoint:
            config["endpoint"] = endpoint
        if access_key_id and secret_access_key:
            config |= {"access_key_id": access_key_id, "secret_access_key": secret_access_key}
        self._s3 = S3Store(
            bucket,
            prefix=self.prefix or None,
            client_options={
                "allow_http": True,
                "connect_timeout": CONNECT_TIMEOUT,
                "timeout": REQUEST_TIMEOUT,
            },  # fmt: skip
            retry_config=RETRY,  # type: ignore[arg-type]
            **config,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3TileStore:
        location = store_location(settings)
        if not isinstance(location, S3Location):
            raise StoreConfigError(f"MAPCASCADE_STORE={settings.store!r} is not an s3:// store")
        secret = settings.aws_secret_access_key
        return cls(
            location.bucket,
            location.prefix,
            endpoint=settings.aws_endpoint_url,
            region=settings.aws_region,
            access_key_id=settings.aws_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
        )

    def check(self) -> None:
        """One list request: the endpoint answers, the bucket exists, the credentials work."""
        try:
            obstore.list_with_delimiter(self._s3, None)
        except STORE_ERRORS as e:
            raise StoreConfigError(self._config_problem(e)) from None

    def _config_problem(self, error: Exception) -> str:
        code = s3_error_code(error)
        where = self.endpoint or "AWS S3"
        if code == "NoSuchBucket":
            problem = f"bucket {self.bucket!r} does not exist at {where} (AWS_ENDPOINT_URL)"
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied") or (
            "403 Forbidden" in str(error)
        ):
            problem = (f"{where} refused the credentials ({code or '403'}): check "
                       "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")  # fmt: skip
        elif code:
            problem = f"{where} answered {code}"
        else:
            problem = f"cannot reach {where} (AWS_ENDPOINT_URL): {cause(error)}"
        return f"MAPCASCADE_STORE={self.url}: {problem}"

    # Reads

    def get(self, layer: str, tile: Tile) -> StoredTile | None:
        return self._call(lambda: self._get(tile_key(layer, tile)))

    async def get_async(self, layer: str, tile: Tile) -> StoredTile | None:
        key = tile_key(layer, tile)

        async def get() -> StoredTile | None:
            try:
                result = await obstore.get_async(self._s3, key)
            except FileNotFoundError:
                return None
            return stored_tile(bytes(await result.bytes_async()), result.meta)

        return await self._call_async(get)

    def _get(self, key: str) -> StoredTile | None:
        try:
            result = obstore.get(self._s3, key)
        except FileNotFoundError:
            return None
        return stored_tile(bytes(result.bytes()), result.meta)

    def exists(self, layer: str, tile: Tile) -> bool:
        return self._call(lambda: self._exists(tile_key(layer, tile)))

    def _exists(self, key: str) -> bool:
        try:
            obstore.head(self._s3, key)
        except FileNotFoundError:
            return False
        return True

    def has_block(self, block: Block) -> bool:
        keys = [meta_key(block), *(tile_key(block.layer, c) for c in block.children)]
        return self._call(lambda: all(self._exists(key) for key in keys))

    async def has_block_async(self, block: Block) -> bool:
        async def exists(key: str) -> bool:
            try:
                await obstore.head_async(self._s3, key)
            except FileNotFoundError:
                return False
            return True

        async def whole() -> bool:
            # The metadata first, alone: a miss polls this while the block is being generated.
            if not await exists(meta_key(block)):
                return False
            tiles = (exists(tile_key(block.layer, c)) for c in block.children)
            return all(await asyncio.gather(*tiles))

        return await self._call_async(whole)

    def block_meta(self, block: Block) -> dict | None:
        stored = self._call(lambda: self._get(meta_key(block)))
        return None if stored is None else json.loads(stored.data)

    def tiles_in(self, layer: str, rect: TileRect) -> Iterator[Tile]:
        for x, y, _ in self._call(lambda: self._keys_in(f"{layer}/{rect.z}", rect, ".png")):
            yield Tile(x, y, rect.z)

    def _keys_in(self, folder: str, rect: TileRect, suffix: str) -> list[tuple[int, int, str]]:
        """`{folder}/{x}/{y}{suffix}` inside the rectangle, listing only the columns that
        exist (an area can span far more tiles than were ever generated)."""
        found = []
        for column in obstore.list_with_delimiter(self._s3, folder)["common_prefixes"]:
            name = column.rstrip("/").rsplit("/", 1)[-1]
            if not (name.isdigit() and rect.x0 <= int(name) <= rect.x1):
                continue
            for batch in obstore.list(self._s3, f"{folder}/{name}"):
                for obj in batch:
                    stem = obj["path"].rsplit("/", 1)[-1].removesuffix(suffix)
                    if stem.isdigit() and rect.y0 <= int(stem) <= rect.y1:
                        found.append((int(name), int(stem), obj["path"]))
        return found

    # Writes

    def put_block(
        self, block: Block, tiles: list[bytes], meta: dict, imagery: list[bytes] | None = None
    ) -> None:
        def put() -> None:
            for child, data in zip(block.children, imagery or [], strict=False):
                obstore.put(self._s3, tile_key(imagery_of(block.layer), child), data,
                            attributes=PNG)  # fmt: skip
            for child, data in zip(block.children, tiles, strict=True):
                obstore.put(self._s3, tile_key(block.layer, child), data, attributes=PNG)
            # Last: a block whose metadata is visible is whole.
            body = json.dumps(meta, indent=1).encode()
            obstore.put(self._s3, meta_key(block), body, attributes=JSON)

        self._call(put)

    def delete(self, layer: str, tile: Tile) -> bool:
        """Remove one tile and the metadata of the block it belongs to."""

        def delete() -> bool:
            key = tile_key(layer, tile)
            existed = self._exists(key)
            obstore.delete(self._s3, key)
            if tile.z > 0:
                obstore.delete(self._s3, meta_key(Block.of(layer, tile)))
            return existed

        return self._call(delete)

    def delete_blocks(self, layer: str, areas: Iterable[TileRect]) -> Removed:
        def delete() -> Removed:
            tiles = blocks = 0
            for parents in areas:
                # Metadata first: without it the block counts as missing and is regenerated.
                blocks += self._delete_keys(f"{layer}/blocks/{parents.z}", parents, ".json")
                children = parents.descendants(parents.z + 1)
                tiles += self._delete_keys(f"{layer}/{children.z}", children, ".png")
                self._delete_keys(f"{imagery_of(layer)}/{children.z}", children, ".png")
            return Removed(tiles, blocks)

        return self._call(delete)

    def _delete_keys(self, folder: str, rect: TileRect, suffix: str) -> int:
        keys = [key for _, _, key in self._keys_in(folder, rect, suffix)]
        if keys:
            obstore.delete(self._s3, keys)  # batched: up to 1000 keys per request
        return len(keys)

    # Errors

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except STORE_ERRORS as e:
            raise self._unavailable(e) from e

    async def _call_async(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except STORE_ERRORS as e:
            raise self._unavailable(e) from e

    def _unavailable(self, error: Exception) -> StoreUnavailable:
        # The details (endpoint, request) go to the log; a client only learns to come back.
        log.warning("tile store %s unavailable: %s", self.url, first_line(error))
        return StoreUnavailable("the tile store is unavailable; try again later")


def stored_tile(data: bytes, meta: Any) -> StoredTile:
    mtime = meta["last_modified"].timestamp()
    # The object's own ETag: a proxy serving the bucket directly sends the same one.
    return StoredTile(data, mtime, meta.get("e_tag") or f'"{int(mtime * 1e6):x}-{len(data):x}"')


def s3_error_code(error: Exception) -> str | None:
    """The `<Code>` of an S3 error response quoted in the client's message, if any."""
    found = re.search(r"<Code>(\w+)</Code>", str(error))
    return found.group(1) if found else None


def cause(error: Exception) -> str:
    """The innermost reason in obstore's one-line chain ("... - HTTP error: error sending
    request"), without the request it was reached through."""
    return first_line(error).rsplit(" - ", 1)[-1].strip()


def first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
