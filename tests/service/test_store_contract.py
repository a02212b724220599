"""What every tile store promises, checked on the file store and on S3 (a real SeaweedFS): whole
blocks with their metadata last, ETag and Last-Modified, listing and truncation of blocks."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from app.s3store import S3TileStore
from app.store import FileTileStore, Removed, TileStore, imagery_of
from app.tiles import Block, Tile, TileRect
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY

LAYER = "l"
BLOCK = Block(LAYER, 18, 154803, 130818)


def only(block: Block) -> TileRect:
    """The rectangle of one block, named by its parent tile as `delete_blocks` takes them."""
    return TileRect(block.z, block.x, block.y, block.x, block.y)


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path: Path) -> TileStore:
    if request.param == "file":
        return FileTileStore(tmp_path / "tiles")
    server = request.getfixturevalue("s3_server")
    return S3TileStore(server.new_bucket(), "cache", endpoint=server.endpoint, region=REGION,
                       access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)  # fmt: skip


def put(store: TileStore, block: Block, i: int = 1) -> list[bytes]:
    tiles = [png((i, n, 0)) for n in range(4)]
    store.put_block(block, tiles, {"i": i}, [png((0, 0, n)) for n in range(4)])
    return tiles


def test_a_block_is_four_tiles_its_imagery_and_its_metadata(store):
    assert not store.has_block(BLOCK) and store.block_meta(BLOCK) is None
    tiles = put(store, BLOCK)
    assert store.has_block(BLOCK) and asyncio.run(store.has_block_async(BLOCK))
    assert store.block_meta(BLOCK) == {"i": 1}
    for child, data in zip(BLOCK.children, tiles, strict=True):
        stored = store.get(LAYER, child)
        assert stored is not None and stored.data == data and store.exists(LAYER, child)
        assert asyncio.run(store.get_async(LAYER, child)) == stored
    imagery = store.get(imagery_of(LAYER), BLOCK.children[3])
    assert imagery is not None and imagery.data == png((0, 0, 3))
    assert store.get(LAYER, Tile(0, 0, 19)) is None
    assert asyncio.run(store.get_async(LAYER, Tile(0, 0, 19))) is None


def test_etag_and_last_modified_name_the_tile_version(store):
    put(store, BLOCK, 1)
    first = store.get(LAYER, BLOCK.children[0])
    assert first is not None and abs(first.mtime - time.time()) < 60
    assert first.etag.startswith('"') and first.etag.endswith('"')
    assert store.get(LAYER, BLOCK.children[0]) == first  # read again: the same version
    store.delete_blocks(LAYER, [only(BLOCK)])
    put(store, BLOCK, 2)  # regenerated with other pixels
    second = store.get(LAYER, BLOCK.children[0])
    assert second is not None and second.etag != first.etag


def test_a_reader_never_sees_metadata_before_all_four_tiles(store):
    blocks = [Block(LAYER, 18, 154803 + i, 130818) for i in range(12)]
    broken: list[Block] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for block in blocks:
                if store.block_meta(block) is not None and not all(
                    store.exists(LAYER, child) for child in block.children
                ):
                    broken.append(block)

    reader = threading.Thread(target=read)
    reader.start()
    for block in blocks:
        put(store, block)
    done.set()
    reader.join()
    assert broken == []
    assert all(store.has_block(b) for b in blocks)


def test_tiles_in_lists_only_the_stored_tiles_inside_the_rectangle(store):
    inside, outside = Block(LAYER, 18, 10, 20), Block(LAYER, 18, 30, 20)
    put(store, inside)
    put(store, outside)
    rect = TileRect(19, 19, 40, 59, 41)  # z, x0, y0, x1, y1: all of `inside`, none of `outside`
    assert sorted(store.tiles_in(LAYER, rect)) == sorted(inside.children)
    assert list(store.tiles_in(LAYER, TileRect(17, 0, 0, 100, 100))) == []


def test_delete_blocks_removes_blocks_with_their_tiles_and_imagery_and_nothing_else(store):
    top = Block(LAYER, 18, 10, 20)
    below = [Block(LAYER, 19, c.x, c.y) for c in top.children]
    beside = Block(LAYER, 18, 11, 20)
    for block in (top, *below, beside):
        put(store, block)
    areas = [only(top), TileRect(19, 20, 40, 21, 41)]  # top's block, then the 4 below
    assert store.delete_blocks(LAYER, areas) == Removed(tiles=4 + 16, blocks=1 + 4)
    for block in (top, *below):
        assert not store.has_block(block) and store.block_meta(block) is None
        assert all(store.get(LAYER, c) is None for c in block.children)
        assert all(store.get(imagery_of(LAYER), c) is None for c in block.children)
    assert store.has_block(beside)
    assert store.delete_blocks(LAYER, areas) == Removed(0, 0)  # already gone


def test_deleting_a_tile_removes_its_block_metadata(store):
    put(store, BLOCK)
    assert store.delete(LAYER, BLOCK.children[1]) is True
    assert store.block_meta(BLOCK) is None and not store.has_block(BLOCK)
    assert store.delete(LAYER, BLOCK.children[1]) is False
    assert store.get(LAYER, BLOCK.children[0]) is not None
