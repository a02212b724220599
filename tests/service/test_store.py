"""The file tile store: atomic writes, complete blocks, and deletion of tiles and whole blocks."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from app.store import FileTileStore, Removed, imagery_of
from app.tiles import Block, Tile, TileRect

LAYER = "l"
BLOCK = Block(LAYER, 18, 154803, 130818)


def tile_bytes(i: int, size: int = 64 * 1024) -> bytes:
    return bytes([i]) * size


@pytest.fixture
def store(tmp_path: Path) -> FileTileStore:
    return FileTileStore(tmp_path / "tiles")


def put(store: FileTileStore, block: Block, i: int = 1) -> None:
    store.put_block(block, [tile_bytes(i)] * 4, {"model": "test", "i": i})


def files(store: FileTileStore) -> set[str]:
    return {str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file()}


def test_put_block_writes_four_tiles_and_the_metadata_last(store):
    put(store, BLOCK)
    assert store.has_block(BLOCK)
    assert store.block_meta(BLOCK) == {"model": "test", "i": 1}
    for child in BLOCK.children:
        stored = store.get(LAYER, child)
        assert stored is not None and stored.data == tile_bytes(1)
    assert store.get(LAYER, Tile(0, 0, 19)) is None
    assert store.meta_path(BLOCK).stat().st_mtime_ns >= max(
        store.tile_path(LAYER, c).stat().st_mtime_ns for c in BLOCK.children
    )
    assert not [p for p in store.root.rglob(".tmp-*")]
    assert oct(store.tile_path(LAYER, BLOCK.children[0]).stat().st_mode & 0o777) == "0o644"


def test_a_reader_sees_a_whole_tile_or_the_previous_one_never_a_partial_one(store):
    put(store, BLOCK, 1)
    tile = BLOCK.children[0]
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            stored = store.get(LAYER, tile)
            assert stored is not None
            seen.add(stored.data)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(2, 30):
        put(store, BLOCK, i)
    stop.set()
    reader.join()
    assert seen <= {tile_bytes(i) for i in range(1, 30)}


def test_a_failed_write_leaves_neither_a_temp_file_nor_a_partial_tile(store, monkeypatch):
    put(store, BLOCK, 1)

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        put(store, BLOCK, 2)
    monkeypatch.undo()
    assert store.get(LAYER, BLOCK.children[0]).data == tile_bytes(1)  # type: ignore[union-attr]
    assert not [p for p in store.root.rglob(".tmp-*")]


def test_has_block_needs_the_metadata_and_all_four_tiles(store):
    assert not store.has_block(BLOCK)
    put(store, BLOCK)
    store.tile_path(LAYER, BLOCK.children[3]).unlink()
    assert not store.has_block(BLOCK)
    put(store, BLOCK)
    store.meta_path(BLOCK).unlink()
    assert not store.has_block(BLOCK)  # tiles alone: the block may have been cut short


def test_deleting_a_tile_removes_its_block_metadata(store):
    put(store, BLOCK)
    tile = BLOCK.children[1]
    assert store.delete(LAYER, tile)
    assert not store.exists(LAYER, tile) and store.block_meta(BLOCK) is None
    assert not store.has_block(BLOCK)
    assert all(store.exists(LAYER, c) for c in BLOCK.children if c != tile)
    assert not store.delete(LAYER, tile)  # already gone


def test_delete_blocks_removes_whole_blocks_with_their_metadata_and_counts_them(store):
    # Blocks at z18 (tiles at z19) and their descendants at z19 (tiles at z20).
    z18 = [Block(LAYER, 18, x, y) for x in (10, 11, 12) for y in (20, 21)]
    z19 = [Block(LAYER, 19, x, y) for x in range(20, 26) for y in range(40, 44)]
    for block in z18 + z19:
        put(store, block)
    before = files(store)
    # Blocks x 10..11 at z18, and their descendants at z19 (x 20..23), rows as given.
    areas = [TileRect(18, 10, 20, 11, 21), TileRect(19, 20, 40, 23, 43), TileRect(20, 0, 0, 9, 9)]
    gone = [b for b in z18 if b.x <= 11] + [b for b in z19 if b.x <= 23]

    removed = store.delete_blocks(LAYER, areas)

    assert removed == Removed(tiles=4 * len(gone), blocks=len(gone)) == (4 * 20, 20)
    for block in z18 + z19:
        deleted = block in gone
        assert (store.block_meta(block) is None) == deleted
        assert store.has_block(block) != deleted
        assert all(store.exists(LAYER, c) != deleted for c in block.children)
    assert len(before) - len(files(store)) == 5 * len(gone)
    # Emptied columns go too; the rest of the tree stays.
    assert not (store.root / LAYER / "19" / "20").exists()
    assert (store.root / LAYER / "19" / "24").is_dir()
    assert store.delete_blocks(LAYER, areas) == (0, 0)
    assert store.delete_blocks("other", areas) == (0, 0)


def test_delete_blocks_leaves_files_that_are_not_tiles_alone(store):
    put(store, BLOCK)
    column = store.tile_path(LAYER, BLOCK.children[0]).parent
    (column / "notes.txt").write_text("keep")
    (column / "x.png").write_bytes(b"keep")
    removed = store.delete_blocks(LAYER, [TileRect(18, BLOCK.x, BLOCK.y, BLOCK.x, BLOCK.y)])
    assert removed == (4, 1)
    assert (column / "notes.txt").read_text() == "keep" and (column / "x.png").exists()


def test_imagery_is_written_with_its_block_and_truncated_with_it(tmp_path: Path) -> None:
    store = FileTileStore(tmp_path)
    store.put_block(BLOCK, [tile_bytes(1)] * 4, {"model": "test"}, [tile_bytes(2)] * 4)
    child = BLOCK.children[0]
    assert store.get(imagery_of(LAYER), child).data == tile_bytes(2)
    assert store.get(LAYER, child).data == tile_bytes(1)
    store.delete_blocks(LAYER, [TileRect(BLOCK.z, BLOCK.x, BLOCK.y, BLOCK.x, BLOCK.y)])
    assert store.get(imagery_of(LAYER), child) is None and store.get(LAYER, child) is None
