"""Compiling a module once, and checking that it fits its Module-Format."""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from actorao._exceptions import ModuleError
from actorao.vm._binary import export_mutable_globals
from actorao.vm._engine import ENGINE_FINGERPRINT, engine

WASM_MAGIC = b"\0asm"


@dataclass(frozen=True, slots=True)
class CompiledModule:
    """A compiled module that passed its format's check. Instantiate it many times."""

    module: wasmtime.Module
    pointer: str  # "i32" or "i64"
    format: str  # its Module-Format, e.g. "wasm32-unknown-unknown"

    def serialize(self) -> bytes:
        """The compiled machine code, for ``load_compiled`` in another process of this node."""
        return bytes(self.module.serialize())


def artifact_suffix() -> bytes:
    """Where a module's compiled artifact is kept, beside its id: machine code is only valid for the
    wasmtime version and engine settings that made it, so both are in the key."""
    return b"/compiled/" + ENGINE_FINGERPRINT.encode()


def compile_module(wasm: bytes, module_format: str | None = None) -> CompiledModule:
    """Compile ``wasm`` and check it against ``module_format`` (detected from its imports and memory
    when None); raise ModuleError naming what is wrong."""
    if not isinstance(wasm, (bytes, bytearray)) or not bytes(wasm[:4]) == WASM_MAGIC:
        raise ModuleError("module: not a WebAssembly binary (it does not start with \\0asm)")
    try:
        wasmtime.Module.validate(engine(), bytes(wasm))
    except wasmtime.WasmtimeError as exc:
        raise ModuleError(f"module: does not compile: {exc}") from exc
    return _checked(wasmtime.Module(engine(), export_mutable_globals(bytes(wasm))), module_format)


def load_compiled(artifact: bytes, module_format: str | None = None) -> CompiledModule:
    """A module from its stored artifact, without compiling again. The artifact must come from this
    node's own store: deserializing trusts the bytes to be wasmtime's own output."""
    try:
        module = wasmtime.Module.deserialize(engine(), artifact)
    except wasmtime.WasmtimeError as exc:
        raise ModuleError(f"module: its compiled artifact does not load: {exc}") from exc
    return _checked(module, module_format)


def _checked(module: wasmtime.Module, module_format: str | None) -> CompiledModule:
    from actorao.vm.formats import detect_format, format_named

    name = module_format or detect_format(module)
    return CompiledModule(module, format_named(name).check(module, name), name)
