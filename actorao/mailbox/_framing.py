"""Many items in one ZeroMQ frame. A frame per item costs a syscall and a wake-up each; packing a
batch into one frame is what lets a worker keep up (see DESIGN.md's measured facts).

A frame is: kind (1 byte) ‖ count (u32) ‖ count lengths (u32 each) ‖ the items, concatenated.
"""

from __future__ import annotations

import struct
from array import array

_HEAD = struct.Struct("<cI")

# Frame kinds, node -> worker (and scheduler shard -> worker's feed: ASSIGN and WAKE)
ASSIGN = b"A"  # items: log key, module JSON, alternating
DRY_RUN = b"D"  # items: token, process id, module JSON
DIGEST = b"H"  # items: token, process id, b"": the SHA-256 of the process's state, after its log
WAKE = b"W"  # items: process ids to catch up from the log
STOP = b"S"  # no items
EVICT = b"V"  # items: process ids to checkpoint, commit and forget: they move to another worker
# scheduler shard -> worker's feed, around a commit (``su/_feeds.py``, ``cu/_ahead.py``)
AHEAD = b"P"  # items: the commit's header, then log key, module JSON, alternating: pushed before the commit
DURABLE = b"U"  # items: a commit's header: the shard's commits through that one are synced
# worker -> node
RESULTS = b"R"  # items: log key, result JSON, alternating
QUIET_RESULTS = b"r"  # as RESULTS, none of which sends anything, then the last log key of each process, joined
DRY_RESULT = b"d"  # items: token, result JSON (or digest): the answer to DRY_RUN or DIGEST
READY = b"Y"  # items: worker index
EVICTED = b"v"  # items: the process ids evicted, everything of theirs committed
# node -> scheduler shard
REQUEST = b"Q"  # items: a request (orjson), the node's time in ms[, placements (orjson)]; answered in ACKS
# scheduler shard -> node (READY too)
ACKS = b"K"  # items: the shard's counters, then one answer per request (orjson each)
ASSIGNED = b"N"  # items: log key, module JSON, alternating: assignments of processes the shard cannot place

# How a result that sends nothing ends (vm/_evaluator.py writes these keys last, in this order): one
# suffix test instead of three searches. A result written otherwise takes the messenger's full test.
QUIET_END = b'"Messages":[],"Spawns":[],"Assignments":[]}'


def pack(kind: bytes, items: list[bytes]) -> bytes:
    # One join: a frame of a commit's assignments is hundreds of kB, and each concatenation copies it.
    return b"".join((_HEAD.pack(kind, len(items)), array("I", map(len, items)).tobytes(), *items))


def unpack(frame: bytes) -> tuple[bytes, list[bytes]]:
    if len(frame) < _HEAD.size:
        raise ValueError(f"frame of {len(frame)} bytes is shorter than its header")
    kind, count = _HEAD.unpack_from(frame)
    lengths = array("I")
    table_end = _HEAD.size + 4 * count
    lengths.frombytes(frame[_HEAD.size : table_end])
    items = []
    at = table_end
    for size in lengths:
        items.append(frame[at : at + size])
        at += size
    if at != len(frame):
        raise ValueError(f"frame holds {len(frame)} bytes, its table describes {at}")
    return kind, items
