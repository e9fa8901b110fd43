"""How a process's snapshot is stored: the slot it reflects, its globals, and zlib-compressed memory.

Globals are kept as exact bits: a float global may hold inf or NaN, which JSON cannot carry.
"""

from __future__ import annotations

import struct
import zlib

import orjson

from actorao.vm import Snapshot

_HEAD = struct.Struct("<QI")
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")


def _encode_value(value: int | float) -> list[object]:
    if isinstance(value, float):
        return ["f64", _U64.unpack(_F64.pack(value))[0]]
    return ["int", value]


def _decode_value(kind: str, raw: int) -> int | float:
    return _F64.unpack(_U64.pack(raw))[0] if kind == "f64" else raw


def encode_checkpoint(slot: int, snapshot: Snapshot) -> bytes:
    globals_json = orjson.dumps([[name, *_encode_value(value)] for name, value in snapshot.globals])
    return _HEAD.pack(slot, len(globals_json)) + globals_json + zlib.compress(snapshot.memory, 1)


def decode_checkpoint(blob: bytes) -> tuple[int, Snapshot]:
    slot, size = _HEAD.unpack_from(blob)
    start = _HEAD.size
    globals_ = tuple((name, _decode_value(kind, raw)) for name, kind, raw in orjson.loads(blob[start : start + size]))
    return slot, Snapshot(zlib.decompress(blob[start + size :]), globals_)
