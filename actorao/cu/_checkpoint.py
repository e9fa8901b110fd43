"""Checkpoints: a process's memory and globals at a slot, stored as zstd-compressed deltas.

A process's checkpoints form a chain in the ``checkpoints`` database, keyed by process id ‖ slot:
a full base, then deltas that each hold only the 4 KiB pages changed since the checkpoint before.
A full base holds only the pages that are not zero (the pages it leaves out are zeros): a model
process's 1.2 GiB memory is mostly zeros, and a base of it is its few MiB of data.
Every ``full_every`` deltas a new full base starts a new chain and the old one is pruned. Restoring
reads back from the newest entry to its base and applies the deltas forward.

A checkpoint blob is: header ‖ globals JSON ‖ zstd(payload). The payload of a full checkpoint is the
numbers (u32 each) of its non-zero pages and then those pages (kind 2), or the whole memory (kind 0,
as older nodes wrote it); of a delta, the changed page numbers and then those pages. Globals are kept as
exact bits, since a float global may hold inf or NaN, which JSON cannot carry.
"""

from __future__ import annotations

import struct
import threading
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import lmdb
import orjson
import zstandard

from actorao._exceptions import Overloaded
from actorao.persist import Store
from actorao.vm import DIFF_PAGE, Instance, Snapshot, new_buffer, nonzero_pages

PAGE = DIFF_PAGE
_HEAD = struct.Struct("<BBQQQII")  # version, kind, slot, base slot, memory size, page count, globals size
_VERSION = 1
_FULL, _DELTA, _SPARSE = 0, 1, 2  # _FULL: a dense base, read but no longer written
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")
_zstd = threading.local()  # a ZstdCompressor or Decompressor is not for two threads at once (a worker has several)


def _compressor() -> zstandard.ZstdCompressor:
    found: zstandard.ZstdCompressor | None = getattr(_zstd, "compressor", None)
    if found is None:
        found = _zstd.compressor = zstandard.ZstdCompressor(level=3)
    return found


def _decompressor() -> zstandard.ZstdDecompressor:
    found: zstandard.ZstdDecompressor | None = getattr(_zstd, "decompressor", None)
    if found is None:
        found = _zstd.decompressor = zstandard.ZstdDecompressor()
    return found


@dataclass(frozen=True, slots=True)
class Encoded:
    slot: int
    blob: bytes
    full: bool


def _encode_globals(snapshot: Snapshot) -> bytes:
    out = []
    for name, value in snapshot.globals:
        if isinstance(value, float):
            out.append([name, "f64", _U64.unpack(_F64.pack(value))[0]])
        else:
            out.append([name, "int", value])
    return orjson.dumps(out)


def _decode_globals(raw: bytes) -> tuple[tuple[str, int | float], ...]:
    return tuple(
        (name, _F64.unpack(_U64.pack(bits))[0] if kind == "f64" else bits) for name, kind, bits in orjson.loads(raw)
    )


def changed_pages(before: bytes | bytearray, after: bytes | bytearray) -> list[int]:
    """The numbers of the PAGE-sized pages of ``after`` that differ from ``before`` (or are new)."""
    old, new = memoryview(before), memoryview(after)
    common = min(len(old), len(new))
    pages = [at // PAGE for at in range(0, common, PAGE) if old[at : at + PAGE] != new[at : at + PAGE]]
    pages.extend(range(-(-common // PAGE), -(-len(new) // PAGE)))
    return pages


def is_base(blob: bytes) -> bool:
    """Whether a stored checkpoint starts a chain (a base, not a delta)."""
    return blob[1] != _DELTA


def links(blob: bytes) -> tuple[int, int | None]:
    """A stored checkpoint's slot, and the slot of the checkpoint it is a delta against (None: a base)."""
    _, kind, slot, base_slot, *_ = _HEAD.unpack_from(blob)
    return slot, (base_slot if kind == _DELTA else None)


def _is_dense(blob: bytes) -> bool:
    return blob[1] == _FULL


def encode(slot: int, snapshot: Snapshot, base_slot: int | None, pages: list[int] | None,
           nonzero: list[int] | None = None) -> Encoded:
    """A full checkpoint (``pages`` None) or a delta holding ``pages`` of ``snapshot`` against the
    checkpoint at ``base_slot``. A full one holds the non-zero pages: ``nonzero`` when the caller
    knows them, else found by a scan."""
    globals_json = _encode_globals(snapshot)
    memory = memoryview(snapshot.memory)
    if pages is None:
        kind, base_slot = _SPARSE, slot
        pages = nonzero_pages(snapshot.memory, snapshot.written) if nonzero is None else nonzero
    else:
        assert base_slot is not None
        kind = _DELTA
    payload = array("I", pages).tobytes() + b"".join(memory[p * PAGE : (p + 1) * PAGE] for p in pages)
    head = _HEAD.pack(_VERSION, kind, slot, base_slot, len(memory), len(pages), len(globals_json))
    return Encoded(slot, head + globals_json + _compressor().compress(payload), kind == _SPARSE)


def _decompress_into(compressed: memoryview, target: memoryview, size: int) -> None:
    """Decompress straight into ``target``: no intermediate copy of a 68 MiB memory."""
    reader = _decompressor().stream_reader(compressed)
    filled = 0
    while filled < size:
        got = reader.readinto(target[filled:size])
        if not got:
            raise ValueError(f"checkpoint holds {filled} bytes of memory, its header says {size}")
        filled += got


def decode_chain(blobs: list[bytes]) -> tuple[int, Snapshot]:
    """Apply a chain, oldest (a full checkpoint) first, and return its newest slot and snapshot."""
    memory = bytearray()

    def target(size: int) -> memoryview:
        if size > len(memory):  # memory grew since the checkpoint before
            memory.extend(bytes(size - len(memory)))
        return memoryview(memory)

    slot, globals_ = _apply_chain(blobs, target)
    return slot, Snapshot(memory, globals_)


def restore_chain(blobs: list[bytes], instance: Instance) -> tuple[int, Snapshot]:
    """Apply a chain into a snapshot buffer whose untouched pages cost nothing, then restore it into
    ``instance`` (only the pages that differ are written); return its slot and the snapshot, which a
    process keeps for its next delta and its rollbacks."""
    for blob in blobs:  # before the buffer is sized after a header that may be garbage
        version, _, this_slot, _, size, _, _ = _HEAD.unpack_from(blob)
        if version != _VERSION:
            raise ValueError(f"checkpoint at slot {this_slot} has version {version}, this node reads {_VERSION}")
        if size > instance.effective_memory_limit():
            raise ValueError(f"checkpoint at slot {this_slot} holds {size} bytes of memory, over the process's limit")
    memory = new_buffer(size)
    written: set[int] = set()
    slot, globals_ = _apply_chain(blobs, lambda _size: memoryview(memory), written)
    snapshot = Snapshot(memory, globals_, None if _is_dense(blobs[0]) else written)
    instance.restore(snapshot)
    return slot, snapshot


def _apply_chain(
    blobs: list[bytes], target: Callable[[int], memoryview], written: set[int] | None = None
) -> tuple[int, tuple[tuple[str, int | float], ...]]:
    """Write a chain into the memory that ``target(size)`` returns, grown to ``size``; add the numbers
    of the pages written to ``written`` (a dense base's are not counted)."""
    slot = -1
    globals_: tuple[tuple[str, int | float], ...] = ()
    for number, blob in enumerate(blobs):
        version, kind, this_slot, base_slot, size, count, globals_size = _HEAD.unpack_from(blob)
        if version != _VERSION:
            raise ValueError(f"checkpoint at slot {this_slot} has version {version}, this node reads {_VERSION}")
        if (kind != _DELTA) != (number == 0) or (kind == _DELTA and base_slot != slot):
            raise ValueError(f"checkpoint chain is broken at slot {this_slot}")
        slot = this_slot
        at = _HEAD.size
        globals_ = _decode_globals(blob[at : at + globals_size])
        compressed = memoryview(blob)[at + globals_size :]
        with target(size) as memory:  # released before the next blob may grow the memory
            if kind == _FULL:
                _decompress_into(compressed, memory, size)
                continue
            payload = _decompressor().decompress(compressed)
            table = array("I")
            table.frombytes(payload[: 4 * count])
            if written is not None:
                written.update(table)
            at = 4 * count
            for page in table:
                chunk = payload[at : at + PAGE]
                memory[page * PAGE : page * PAGE + len(chunk)] = chunk
                at += len(chunk)
    return slot, globals_


def load(store: Store, pid: str) -> tuple[int, Snapshot] | None:
    """The newest checkpoint of ``pid``, restored from its chain; None if it has none."""
    chain = read_chain(store, pid)
    return decode_chain(chain) if chain else None


def read_chain(store: Store, pid: str) -> list[bytes]:
    """The blobs of ``pid``'s newest checkpoint chain, oldest (its full base) first."""
    return store.checkpoint_chain(pid, is_base)


def put(txn: lmdb.Transaction, store: Store, pid: str, encoded: Encoded) -> None:
    """Store one checkpoint; a full one prunes the chains before it."""
    store.put_checkpoint(txn, pid, encoded.slot, encoded.blob, prune_before=encoded.full)


def newest_slot(store: Store, pid: str) -> int:
    """The slot of ``pid``'s newest stored checkpoint; -1 when it has none."""
    chain = store.checkpoint_sizes(pid, is_base)
    return chain[-1][0] if chain else -1


def extend(store: Store, pid: str, blobs: list[bytes]) -> bool:
    """Store checkpoints of ``pid`` taken elsewhere (a remote worker's), oldest first, where they go on
    from the stored chain: those at or below its newest slot are dropped (the store has as recent a
    state), and the first left must be a base or a delta against that newest one. Anything else
    would splice two chains, whose deltas hold the pages changed since different states: False, and
    nothing is stored."""
    newest = newest_slot(store, pid)
    fresh = [(*links(blob), blob) for blob in blobs]
    fresh = [(slot, base, blob) for slot, base, blob in fresh if slot > newest]
    if not fresh:
        return True
    first_base = fresh[0][1]
    if first_base is not None and first_base != newest:
        return False
    if any(base is not None and base != before for (_, base, _), (before, _, _) in zip(fresh[1:], fresh, strict=False)):
        return False

    def body(txn: lmdb.Transaction) -> None:
        for slot, base, blob in fresh:
            store.put_checkpoint(txn, pid, slot, blob, prune_before=base is None)

    store.computed.write(body)
    return True


def replace_chain(store: Store, pid: str, blobs: list[bytes]) -> None:
    """Make ``blobs`` (a whole chain, base first) ``pid``'s only stored checkpoints."""

    def body(txn: lmdb.Transaction) -> None:
        store.forget_checkpoints(txn, pid)
        for blob in blobs:
            store.put_checkpoint(txn, pid, links(blob)[0], blob, prune_before=False)

    store.computed.write(body)


# -- reading a stored memory without holding it ---------------------------------------------------
STREAM_CHUNK = 1 << 20  # bytes of memory a state read yields at a time
_PART = 256 << 10  # compressed bytes copied out of the store per short read


class ReplacedWhileRead(Overloaded):
    """A checkpoint was pruned or rewritten while a state read streamed it: read again."""


class _Part:
    """One stored checkpoint blob as a file-like source for zstd: each read copies the next part
    out of the store in a read transaction of its own, and checks the blob is still the same one."""

    def __init__(self, store: Store, pid: str, slot: int, size: int) -> None:
        self.store, self.pid, self.slot, self.size = store, pid, slot, size
        self.at = 0
        self.head: bytes | None = None

    def read(self, length: int = -1) -> bytes:
        length = self.size - self.at if length < 0 else min(length, self.size - self.at)
        if length <= 0:
            return b""
        found = self.store.checkpoint_part(self.pid, self.slot, self.at, length, _HEAD.size)
        if found is None or (self.head is not None and found[0] != self.head):
            raise ReplacedWhileRead(f"the checkpoint of {self.pid} at slot {self.slot} was replaced while it was "
                                    "read; read the state again")
        self.head = found[0]
        self.at += len(found[1])
        return found[1]


def _read_exactly(reader: Any, length: int, what: str) -> bytes:
    parts, got = [], 0
    while got < length:
        part = reader.read(length - got)
        if not part:
            raise ValueError(f"{what} ends {length - got} bytes short")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class StoredMemory:
    """The memory of ``pid``'s newest stored checkpoint chain: its slot and size, and ``chunks()``
    to read it forward. Each blob's zstd stream is decompressed as the read goes (a delta's pages are
    in order, so every stream is read once, forward), and each page is taken from the newest blob
    that holds it. What is held is a chunk, the deltas' page tables and the decompressors' windows:
    never the memory."""

    store: Store
    pid: str
    slot: int
    size: int
    chain: tuple[tuple[int, int], ...]  # (slot, stored bytes), base first

    @classmethod
    def newest(cls, store: Store, pid: str) -> StoredMemory | None:
        chain = store.checkpoint_sizes(pid, is_base)
        if not chain:
            return None
        newest_slot, newest_size = chain[-1]
        head = _Part(store, pid, newest_slot, newest_size).read(_HEAD.size)
        return cls(store, pid, newest_slot, _HEAD.unpack(head)[4], tuple(chain))

    def chunks(self, chunk: int = STREAM_CHUNK) -> Iterator[bytes]:
        chunk -= chunk % PAGE
        layers = []  # (decompressing reader, its page numbers in order, memory size) per blob, base first
        expected, dense = -1, False
        for number, (slot, stored) in enumerate(self.chain):
            source = _Part(self.store, self.pid, slot, stored)
            version, kind, this_slot, base_slot, size, count, globals_size = _HEAD.unpack(source.read(_HEAD.size))
            if version != _VERSION:
                raise ValueError(f"checkpoint at slot {this_slot} has version {version}, this node reads {_VERSION}")
            if (kind != _DELTA) != (number == 0) or (kind == _DELTA and base_slot != expected):
                raise ValueError(f"checkpoint chain is broken at slot {this_slot}")
            expected = this_slot
            dense = dense or kind == _FULL  # a base as older nodes wrote it: the whole memory, in order
            source.read(globals_size)
            # A decompressor each: streams of one decompressor share its context, and these interleave.
            reader = zstandard.ZstdDecompressor().stream_reader(cast(Any, source), read_size=_PART)
            pages = array("I")
            if kind != _FULL:
                pages.frombytes(_read_exactly(reader, 4 * count, f"the delta at slot {this_slot}"))
            layers.append((reader, pages, size))
        cursors = [0] * len(layers)
        for start in range(0, self.size, chunk):
            end = min(start + chunk, self.size)
            out = bytearray(end - start)
            # Oldest layer first, so the newest copy of a page is the one that stays.
            base, _, base_size = layers[0]
            if dense and start < base_size:
                out[: min(end, base_size) - start] = _read_exactly(base, min(end, base_size) - start, "the base")
            first_page, end_page = start // PAGE, -(-end // PAGE)
            for number in range(1 if dense else 0, len(layers)):
                reader, pages, layer_size = layers[number]
                at = cursors[number]
                while at < len(pages) and pages[at] < end_page:
                    offset = (pages[at] - first_page) * PAGE
                    data = _read_exactly(reader, min(PAGE, layer_size - pages[at] * PAGE), f"checkpoint layer {number}")
                    out[offset:offset + len(data)] = data
                    at += 1
                cursors[number] = at
            yield bytes(out)
