"""Checkpoint chains on a real store: deltas of changed pages, zstd, full bases, pruning."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from actorao.cu import _checkpoint as checkpoints
from actorao.message import new_id
from actorao.persist import Store, log_key
from actorao.vm import Snapshot, nonzero_pages

PAGE = checkpoints.PAGE


def encode(slot: int, snapshot: Snapshot, base: tuple[int, Snapshot] | None) -> checkpoints.Encoded:
    """A full checkpoint, or a delta of the pages changed since ``base`` = (its slot, its snapshot)."""
    if base is None:
        return checkpoints.encode(slot, snapshot, None, None)
    return checkpoints.encode(slot, snapshot, base[0], checkpoints.changed_pages(base[1].memory, snapshot.memory))


def mutate(memory: bytes, pages: list[int], grow: int = 0) -> bytes:
    out = bytearray(memory) + bytes(grow)
    for page in pages:
        out[page * PAGE : page * PAGE + 8] = os.urandom(8)
    return bytes(out)


def test_a_delta_holds_only_changed_pages() -> None:
    before = os.urandom(256 * PAGE)
    after = mutate(before, [3, 77, 200])
    assert checkpoints.changed_pages(before, after) == [3, 77, 200]
    assert checkpoints.changed_pages(before, after + bytes(2 * PAGE)) == [3, 77, 200, 256, 257]
    delta = encode(9, Snapshot(after, ()), (8, Snapshot(before, ())))
    full = encode(9, Snapshot(after, ()), None)
    assert not delta.full and full.full
    assert len(delta.blob) < 4 * PAGE < len(full.blob)


def test_a_chain_restores_exactly_through_growth_and_globals(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pid = new_id()
    rng = random.Random(7)
    memory = bytes(64 * PAGE)
    snapshots = []
    base: tuple[int, Snapshot] | None = None
    for slot in range(1, 12):
        memory = mutate(memory, rng.sample(range(len(memory) // PAGE), 5), grow=PAGE * (slot % 3 == 0))
        snapshot = Snapshot(memory, (("g", slot), ("f", float("nan") if slot % 2 else float("-inf"))))
        encoded = encode(slot, snapshot, base)
        store.computed.write(lambda txn, encoded=encoded: checkpoints.put(txn, store, pid, encoded))
        snapshots.append(snapshot)
        base = (slot, snapshot)
        loaded = checkpoints.load(store, pid)
        assert loaded is not None and loaded[0] == slot
        assert loaded[1].memory == snapshot.memory
        assert repr(loaded[1].globals) == repr(snapshot.globals)


def test_a_full_base_prunes_the_chain_before_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pid = new_id()
    memory = bytes(8 * PAGE)
    base = None
    for slot, full in ((1, True), (2, False), (3, False), (4, True), (5, False)):
        memory = mutate(memory, [slot % 8])
        encoded = encode(slot, Snapshot(memory, ()), None if full else base)
        store.computed.write(lambda txn, encoded=encoded: checkpoints.put(txn, store, pid, encoded))
        base = (slot, Snapshot(memory, ()))
    keys = store.computed.read(lambda txn: [bytes(k) for k, _ in txn.cursor(db=store.checkpoints)])
    assert keys == [log_key(pid, 4), log_key(pid, 5)]
    loaded = checkpoints.load(store, pid)
    assert loaded is not None and loaded[1].memory == memory


def test_a_broken_chain_is_refused() -> None:
    one = encode(1, Snapshot(bytes(PAGE), ()), None)
    two = encode(2, Snapshot(b"x" * PAGE, ()), (1, Snapshot(bytes(PAGE), ())))
    three = encode(3, Snapshot(b"y" * PAGE, ()), (2, Snapshot(b"x" * PAGE, ())))
    assert checkpoints.decode_chain([one.blob, two.blob, three.blob])[1].memory == b"y" * PAGE
    with pytest.raises(ValueError, match="broken at slot 3"):
        checkpoints.decode_chain([one.blob, three.blob])
    with pytest.raises(ValueError, match="broken"):
        checkpoints.decode_chain([two.blob])


def test_an_instance_updates_its_checkpoint_buffer_in_place_page_by_changed_page() -> None:
    from actorao import examples
    from actorao.vm import Instance, compile_module

    compiled = compile_module(examples.wasm("trapper"))
    instance = Instance(compiled, memory_limit=1 << 30)
    message, env = b'{"Tags":[{"name":"Action","value":"Inc"}]}', b"{}"
    first, pages = instance.update_snapshot(None)
    assert pages == nonzero_pages(first.memory) and 0 < len(pages) < len(first.memory) // PAGE
    instance.call(message, env, 10**9)
    second, pages = instance.update_snapshot(first)
    assert second.memory is first.memory  # the same buffer, brought up to date
    assert pages is not None and 0 in pages and len(pages) < 8
    assert bytes(second.memory) == instance.read_memory()
    grow = b'{"Tags":[{"name":"Action","value":"Grow"}]}'
    try:
        instance.call(grow, env, 10**9)
    except Exception:
        pass  # Grow traps after growing: the memory is larger now, whatever the result
    third, pages = instance.update_snapshot(second)
    assert bytes(third.memory) == instance.read_memory() and len(third.memory) > 2 * 65536
    # Grow wrote nothing in the grown pages: zeros, as a grown memory starts, so the delta leaves them out
    assert pages and max(pages) < len(second.memory) // PAGE
    assert not [page for page in nonzero_pages(third.memory) if page >= len(second.memory) // PAGE]
    assert third.memory is not second.memory  # a new buffer for the grown memory


def test_a_stored_memory_streams_in_chunks_equal_to_its_restore(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pid = new_id()
    rng = random.Random(11)
    memory = os.urandom(40 * PAGE)
    base: tuple[int, Snapshot] | None = None
    for slot in range(6):  # a base, then deltas that change pages and grow the memory
        memory = mutate(memory, rng.sample(range(len(memory) // PAGE), 7), grow=PAGE * 3 * (slot % 2))
        snapshot = Snapshot(memory, (("g", slot),))
        encoded = encode(slot, snapshot, base)
        store.computed.write(lambda txn, encoded=encoded: checkpoints.put(txn, store, pid, encoded))
        base = (slot, snapshot)
    stored = checkpoints.StoredMemory.newest(store, pid)
    assert stored is not None and (stored.slot, stored.size, len(stored.chain)) == (5, len(memory), 6)
    for chunk in (PAGE, 3 * PAGE, 7 * PAGE + 5, 1 << 20):  # a chunk size not a whole page rounds down
        parts = list(stored.chunks(chunk))
        assert b"".join(parts) == memory
        assert max(len(part) for part in parts) <= max(PAGE, chunk - chunk % PAGE)
    assert checkpoints.StoredMemory.newest(store, new_id()) is None


def test_a_streamed_read_stops_when_its_checkpoint_is_pruned(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pid = new_id()
    first = os.urandom(64 * PAGE)
    store.computed.write(lambda txn: checkpoints.put(txn, store, pid, encode(1, Snapshot(first, ()), None)))
    stored = checkpoints.StoredMemory.newest(store, pid)
    assert stored is not None
    chunks = stored.chunks(PAGE)
    assert next(chunks) == first[:PAGE]
    newer = encode(2, Snapshot(os.urandom(64 * PAGE), ()), None)  # a new base prunes the one being read
    store.computed.write(lambda txn: checkpoints.put(txn, store, pid, newer))
    with pytest.raises(checkpoints.ReplacedWhileRead, match="read the state again"):
        list(chunks)


def test_a_restore_drops_pages_written_since_and_writes_back_only_the_snapshots() -> None:
    from actorao import examples
    from actorao.vm import Instance, compile_module

    instance = Instance(compile_module(examples.wasm("trapper")), memory_limit=1 << 30)
    message, env = b'{"Tags":[{"name":"Action","value":"Inc"}]}', b"{}"
    instance.call(message, env, 10**9)
    snapshot = instance.snapshot()
    assert snapshot.written is not None and 0 < len(snapshot.written) < len(snapshot.memory) // PAGE
    expected = instance.digest()
    instance.call(message, env, 10**9)
    instance.write(len(snapshot.memory) - 8, b"late")  # a page the snapshot holds as zeros
    assert instance.digest() != expected
    instance.restore(snapshot)
    assert instance.digest() == expected and instance.read_memory() == bytes(snapshot.memory)
