"""What a module format provides: a check of the module, and a host for each instance of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import wasmtime

if TYPE_CHECKING:
    from actorao.vm._instance import Instance


class Host(Protocol):
    """One instance's side of a format: its imports, its start, and how strings go in."""

    @property
    def limit_hit(self) -> bool: ...  # a memory growth was refused by the limit during the last call

    @property
    def export_names(self) -> Mapping[str, str]: ...  # "memory" and "handle" where the module renames them

    def imports(self, store: wasmtime.Store, module: wasmtime.Module) -> list[wasmtime.Func]: ...

    def start(self, exports: Mapping[str, Any]) -> None: ...

    def begin(self, message: bytes) -> None: ...  # a call is about to run ``message``

    def place(self, message: bytes, env: bytes) -> tuple[int, int]: ...  # both strings in; their pointers

    def rewinding(self) -> bool: ...  # the call returned only to be rewound into: call handle again

    def end(self) -> None: ...  # the call is over, however it ended

    def host_state(self) -> tuple[tuple[str, int], ...]: ...  # kept with snapshots, beside the globals

    def set_host_state(self, name: str, value: int) -> None: ...


class Format(Protocol):
    """A family of ao Module-Format values served by one host design."""

    names: tuple[str, ...]

    def detect(self, module: wasmtime.Module) -> str | None: ...  # the Module-Format it looks like, or None

    def check(self, module: wasmtime.Module, name: str) -> str: ...  # ModuleError if unfit, else "i32"/"i64"

    def host(self, instance: Instance) -> Host: ...


def type_names(types: list[wasmtime.ValType]) -> list[str]:
    return [str(valtype) for valtype in types]


def memory_export(module: wasmtime.Module) -> wasmtime.MemoryType:
    from actorao._exceptions import ModuleError

    memory = {export.name: export.type for export in module.exports}.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise ModuleError("module: does not export a memory named 'memory'")
    return memory


def check_exports(module: wasmtime.Module, needed: dict[str, tuple[list[str], list[str]]], fmt: str) -> None:
    """Each needed export exists as a function of exactly this (params, results) type."""
    from actorao._exceptions import ModuleError

    exports = {export.name: export.type for export in module.exports}
    for name, (params, results) in needed.items():
        ty = exports.get(name)
        if not isinstance(ty, wasmtime.FuncType):
            raise ModuleError(f"module: does not export the function {name!r}, which {fmt} needs")
        got = (type_names(ty.params), type_names(ty.results))
        if got != (params, results):
            raise ModuleError(f"module: export {name!r} has type {got}, {fmt} needs {(params, results)}")
