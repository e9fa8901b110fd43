"""Example process modules, written in this repo: small ones in WAT, built with ``wasmtime.wat2wasm``;
richer ones (token, wallet) in freestanding C, built with the ziglang package's clang (``c_wasm``).

Each module is the shared prelude (a bump heap, string search, number output) plus a small handler.
String constants are laid out in page 0 here, so the WAT names them as ``${name}`` and never counts bytes.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import wasmtime

__all__ = ["C_NAMES", "NAMES", "c_wasm", "wasm", "wat"]

NAMES = ("counter", "echo", "noop", "pingpong", "trapper")
C_NAMES = ("compute", "fanout", "token", "wallet")

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


@functools.cache
def c_wasm(name: str) -> bytes:
    """The binary of C example module ``name``, compiled for wasm32-freestanding with the clang that
    the PyPI package ziglang ships (a test extra). Cached by the source's hash in the temp folder."""
    if name not in C_NAMES:
        raise ValueError(f"no C example module named {name!r}; there are {', '.join(C_NAMES)}")
    folder = resources.files(__package__)
    header, source = (folder / "ao.h").read_bytes(), (folder / f"{name}.c").read_bytes()
    digest = hashlib.sha256(header + source).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"actorao-{name}-{digest}.wasm"
    if not out.exists():
        with tempfile.TemporaryDirectory() as work:
            (Path(work) / "ao.h").write_bytes(header)
            (Path(work) / f"{name}.c").write_bytes(source)
            built = Path(work) / f"{name}.wasm"
            subprocess.run(
                [sys.executable, "-m", "ziglang", "cc", "--target=wasm32-freestanding", "-nostdlib", "-O2",
                 "-Wl,--no-entry", "-Wl,--export-memory", "-o", str(built), str(Path(work) / f"{name}.c")],
                check=True, capture_output=True, timeout=120,
            )
            built.replace(out)
    return out.read_bytes()
