"""Just enough of the WebAssembly binary format to see a module's mutable globals.

wasmtime can read an instance's exported globals but not its internal ones. A module that keeps state
in an internal mutable global (AssemblyScript's and TinyGo's runtimes do) would then lose that state
on rollback, restore or dry run. ``export_mutable_globals`` rewrites the export section so that every
mutable global is exported too; snapshots then capture all of a process's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from actorao._exceptions import ModuleError

_NUMERIC = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64"}
_IMPORT_SECTION, _GLOBAL_SECTION, _EXPORT_SECTION = 2, 6, 7
_EXPORT_GLOBAL = 3
_BEFORE_EXPORTS = {0, 1, 2, 3, 4, 5, 13, 6}  # custom, type, import, function, table, memory, tag, global
EXPORT_PREFIX = "__actorao_global_"


class _Reader:
    def __init__(self, data: bytes, at: int = 0, end: int | None = None) -> None:
        self.data = data
        self.at = at
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.at >= self.end:
            raise ModuleError("module: truncated WebAssembly binary")
        value = self.data[self.at]
        self.at += 1
        return value

    def uleb(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    def skip(self, count: int) -> None:
        self.at += count

    def name(self) -> str:
        size = self.uleb()
        text = self.data[self.at : self.at + size]
        self.at += size
        return text.decode("utf-8", "replace")

    def limits(self) -> None:
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()
        if flags & 8:  # custom page size
            self.uleb()

    def const_expr(self) -> None:
        """Skip a constant expression up to its ``end``."""
        while True:
            opcode = self.byte()
            if opcode == 0x0B:
                return
            if opcode in (0x41, 0x42, 0x23, 0xD2):  # i32/i64.const, global.get, ref.func
                self.uleb()
            elif opcode == 0x43:
                self.skip(4)
            elif opcode == 0x44:
                self.skip(8)
            elif opcode == 0xD0:  # ref.null heaptype
                self.uleb()
            elif opcode == 0xFD:  # v128.const
                self.uleb()
                self.skip(16)
            elif opcode in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # extended-const arithmetic
                continue
            else:
                raise ModuleError(f"module: unsupported opcode 0x{opcode:02x} in a global's initializer")


def _sections(wasm: bytes) -> list[tuple[int, int, int]]:
    """(id, payload start, payload end) of each section, in order."""
    reader = _Reader(wasm, 8)
    out = []
    while reader.at < len(wasm):
        section = reader.byte()
        size = reader.uleb()
        out.append((section, reader.at, reader.at + size))
        reader.skip(size)
    return out


@dataclass(frozen=True, slots=True)
class MutableGlobal:
    index: int
    type: str
    exported_as: str | None


def mutable_globals(wasm: bytes) -> list[MutableGlobal]:
    """Every mutable global a module defines or imports, and the name it is exported under, if any."""
    sections = _sections(wasm)
    imported = 0
    found: dict[int, str] = {}
    exports: dict[int, str] = {}
    for section, start, end in sections:
        reader = _Reader(wasm, start, end)
        if section == _IMPORT_SECTION:
            for _ in range(reader.uleb()):
                reader.name()
                reader.name()
                kind = reader.byte()
                if kind == 0:
                    reader.uleb()
                elif kind == 1:
                    reader.byte()
                    reader.limits()
                elif kind == 2:
                    reader.limits()
                elif kind == 3:
                    valtype, mutable = reader.byte(), reader.byte()
                    if mutable:
                        found[imported] = _NUMERIC.get(valtype, f"0x{valtype:02x}")
                    imported += 1
                elif kind == 4:
                    reader.byte()
                    reader.uleb()
        elif section == _GLOBAL_SECTION:
            for offset in range(reader.uleb()):
                valtype, mutable = reader.byte(), reader.byte()
                if valtype in (0x63, 0x64):  # (ref null? ht): a typed reference
                    reader.uleb()
                    mutable = reader.byte()
                reader.const_expr()
                if mutable:
                    found[imported + offset] = _NUMERIC.get(valtype, f"0x{valtype:02x}")
        elif section == _EXPORT_SECTION:
            for _ in range(reader.uleb()):
                name = reader.name()
                kind = reader.byte()
                index = reader.uleb()
                if kind == _EXPORT_GLOBAL:
                    exports.setdefault(index, name)
    return [MutableGlobal(index, kind, exports.get(index)) for index, kind in sorted(found.items())]


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def export_mutable_globals(wasm: bytes) -> bytes:
    """``wasm`` with every internal mutable global exported as ``__actorao_global_<index>``.
    A mutable global that is not a number (a reference, a vector) cannot be snapshotted: refused."""
    globals_ = mutable_globals(wasm)
    for found in globals_:
        if found.type not in _NUMERIC.values():
            raise ModuleError(
                f"module: mutable global {found.index} has type {found.type}; actorao can only snapshot "
                "numeric mutable globals"
            )
    hidden = [found for found in globals_ if found.exported_as is None]
    if not hidden:
        return wasm
    added = b"".join(
        _uleb(len(name)) + name + bytes([_EXPORT_GLOBAL]) + _uleb(found.index)
        for found in hidden
        for name in [f"{EXPORT_PREFIX}{found.index}".encode()]
    )
    out = bytearray(wasm[:8])
    placed = False
    for section, start, end in _sections(wasm):
        payload = wasm[start:end]
        if section == _EXPORT_SECTION:
            reader = _Reader(wasm, start, end)
            count = reader.uleb()
            payload = _uleb(count + len(hidden)) + wasm[reader.at : end] + added
            placed = True
        elif not placed and section not in _BEFORE_EXPORTS:
            # No export section yet: it goes before the first section that must follow it.
            payload_new = _uleb(len(hidden)) + added
            out += bytes([_EXPORT_SECTION]) + _uleb(len(payload_new)) + payload_new
            placed = True
        out += bytes([section]) + _uleb(len(payload)) + payload
    if not placed:
        payload_new = _uleb(len(hidden)) + added
        out += bytes([_EXPORT_SECTION]) + _uleb(len(payload_new)) + payload_new
    return bytes(out)
