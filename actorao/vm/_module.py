"""Compiling a module once and checking that it speaks the plain JSON-1 interface."""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from actorao._exceptions import ModuleError
from actorao.vm._binary import export_mutable_globals
from actorao.vm._engine import ENGINE_FINGERPRINT, engine

# (params, results) of each export the JSON-1 interface needs, by pointer width
_JSON1_EXPORTS = {
    "i32": {"malloc": (["i32"], ["i32"]), "handle": (["i32", "i32"], ["i32"])},
    "i64": {"malloc": (["i64"], ["i64"]), "handle": (["i64", "i64"], ["i64"])},
}
WASM_MAGIC = b"\0asm"


@dataclass(frozen=True, slots=True)
class CompiledModule:
    """A compiled module that passed the interface check. Instantiate it many times."""

    module: wasmtime.Module
    pointer: str  # "i32" or "i64"

    def serialize(self) -> bytes:
        """The compiled machine code, for ``load_compiled`` in another process of this node."""
        return bytes(self.module.serialize())


def artifact_suffix() -> bytes:
    """Where a module's compiled artifact is kept, beside its id: machine code is only valid for the
    wasmtime version and engine settings that made it, so both are in the key."""
    return b"/compiled/" + ENGINE_FINGERPRINT.encode()


def load_compiled(artifact: bytes) -> CompiledModule:
    """A module from its stored artifact, without compiling again. The artifact must come from this
    node's own store: deserializing trusts the bytes to be wasmtime's own output."""
    try:
        module = wasmtime.Module.deserialize(engine(), artifact)
    except wasmtime.WasmtimeError as exc:
        raise ModuleError(f"module: its compiled artifact does not load: {exc}") from exc
    return check_json1(module)


def _type_name(valtype: wasmtime.ValType) -> str:
    return str(valtype)


def compile_module(wasm: bytes) -> CompiledModule:
    """Compile ``wasm`` and check its exports and imports; raise ModuleError naming what is wrong."""
    if not isinstance(wasm, (bytes, bytearray)) or not bytes(wasm[:4]) == WASM_MAGIC:
        raise ModuleError("module: not a WebAssembly binary (it does not start with \\0asm)")
    try:
        wasmtime.Module.validate(engine(), bytes(wasm))
    except wasmtime.WasmtimeError as exc:
        raise ModuleError(f"module: does not compile: {exc}") from exc
    module = wasmtime.Module(engine(), export_mutable_globals(bytes(wasm)))
    return check_json1(module)


def check_json1(module: wasmtime.Module) -> CompiledModule:
    for imported in module.imports:
        raise ModuleError(
            f"module: imports {imported.module}.{imported.name}, which the plain "
            "wasm32-unknown-unknown format does not provide"
        )
    exports = {export.name: export.type for export in module.exports}
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise ModuleError("module: does not export a memory named 'memory'")
    pointer = "i64" if memory.is_64 else "i32"
    for name, (params, results) in _JSON1_EXPORTS[pointer].items():
        ty = exports.get(name)
        if not isinstance(ty, wasmtime.FuncType):
            raise ModuleError(f"module: does not export the function {name!r} of the JSON-1 interface")
        got = ([_type_name(p) for p in ty.params], [_type_name(r) for r in ty.results])
        if got != (params, results):
            raise ModuleError(f"module: export {name!r} has type {got}, JSON-1 needs {(params, results)}")
    return CompiledModule(module, pointer)
