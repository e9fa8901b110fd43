"""Example process modules, written in WAT in this repo and built with ``wasmtime.wat2wasm``.

Each module is the shared prelude (a bump heap, string search, number output) plus a small handler.
String constants are laid out in page 0 here, so the WAT names them as ``${name}`` and never counts bytes.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

import wasmtime

__all__ = ["NAMES", "wasm", "wat"]

NAMES = ("counter", "echo", "pingpong", "trapper")

_STRINGS = {
    "ok_output_open": '{"ok":true,"response":{"Output":"',
    "output_close": '","Messages":[],"Spawns":[],"Assignments":[]}}',
    "ok_object_open": '{"ok":true,"response":{"Output":',
    "object_close": ',"Messages":[],"Spawns":[],"Assignments":[]}}',
    "action_inc": '"name":"Action","value":"Inc"',
    "action_trap": '"name":"Action","value":"Trap"',
    "action_loop": '"name":"Action","value":"Loop"',
    "action_grow": '"name":"Action","value":"Grow"',
    "action_ping": '"name":"Action","value":"Ping"',
    "action_start": '"name":"Action","value":"Start"',
    "from_key": '"From":"',
    "data_key": '"Data":"',
    "messages_open": '","Messages":[{"Target":"',
    "ping_tail": '","Tags":[{"name":"Action","value":"Ping"}],"Data":""}],"Spawns":[],"Assignments":[]}}',
}
_STRINGS_AT = 1024


def _wat_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.cache
def wat(name: str) -> str:
    """The WAT text of example module ``name``."""
    if name not in NAMES:
        raise ValueError(f"no example module named {name!r}; there are {', '.join(NAMES)}")
    folder = resources.files(__package__)
    body = (folder / "prelude.wat").read_text() + (folder / f"{name}.wat").read_text()
    offset = _STRINGS_AT
    data = []
    spans = {}
    for key, text in _STRINGS.items():
        size = len(text.encode())
        spans[key] = f"(i32.const {offset}) (i32.const {size})"
        data.append(f"  (data (i32.const {offset}) {_wat_string(text)})")
        offset += size

    def expand(match: re.Match[str]) -> str:
        return spans[match.group(1)]

    return "(module\n" + re.sub(r"\$\{(\w+)\}", expand, body) + "\n".join(data) + ")\n"


@functools.cache
def wasm(name: str) -> bytes:
    """The binary of example module ``name``."""
    return bytes(wasmtime.wat2wasm(wat(name)))
