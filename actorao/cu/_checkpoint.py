"""How a process's snapshot is stored: the slot it reflects, its globals, and zlib-compressed memory."""

from __future__ import annotations

import struct
import zlib

import orjson

from actorao.vm import Snapshot

_HEAD = struct.Struct("<QI")


def encode_checkpoint(slot: int, snapshot: Snapshot) -> bytes:
    globals_json = orjson.dumps(list(snapshot.globals))
    return _HEAD.pack(slot, len(globals_json)) + globals_json + zlib.compress(snapshot.memory, 1)


def decode_checkpoint(blob: bytes) -> tuple[int, Snapshot]:
    slot, size = _HEAD.unpack_from(blob)
    start = _HEAD.size
    globals_ = tuple((name, value) for name, value in orjson.loads(blob[start : start + size]))
    return slot, Snapshot(zlib.decompress(blob[start + size :]), globals_)
