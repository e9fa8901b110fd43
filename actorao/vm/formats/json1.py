"""Plain ``wasm32-unknown-unknown`` and ``wasm64-unknown-unknown`` modules: ao's JSON-1 interface with
no imports at all. The module exports ``memory``, ``malloc`` and ``handle(msg, env) -> result``."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import wasmtime

from actorao._exceptions import ModuleError
from actorao.vm.formats._base import check_exports, memory_export

if TYPE_CHECKING:
    from actorao.vm._instance import Instance

_NEEDS = {
    "i32": {"malloc": (["i32"], ["i32"]), "handle": (["i32", "i32"], ["i32"])},
    "i64": {"malloc": (["i64"], ["i64"]), "handle": (["i64", "i64"], ["i64"])},
}


class Json1Host:
    export_names: Mapping[str, str] = {}

    def __init__(self, instance: Instance) -> None:
        # A proxy: the instance holds its host, and a strong reference back would make a cycle that
        # keeps the instance's whole linear memory alive until the garbage collector runs.
        self.instance = cast("Instance", weakref.proxy(instance))

    @property
    def limit_hit(self) -> bool:
        """memory.grow is an instruction here, refused by the store's limit with no word to the host:
        a call that failed with memory at its limit is taken to have hit it. Asked only on failure."""
        return self.instance.memory_size() + 65536 > self.instance.effective_memory_limit()

    def imports(self, store: wasmtime.Store, module: wasmtime.Module) -> list[wasmtime.Func]:
        return []

    def start(self, exports: Mapping[str, Any]) -> None:
        malloc = exports["malloc"]
        assert isinstance(malloc, wasmtime.Func)
        self.malloc = self.instance.raw_func(malloc)

    def begin(self, message: bytes) -> None:
        pass

    def place(self, message: bytes, env: bytes) -> tuple[int, int]:
        pointers = (self.instance.invoke(self.malloc, len(message) + 1),
                    self.instance.invoke(self.malloc, len(env) + 1))
        self.instance.write_strings(pointers, (message, env))
        return pointers

    def rewinding(self) -> bool:
        return False

    def end(self) -> None:
        pass

    def host_state(self) -> tuple[tuple[str, int], ...]:
        return ()

    def set_host_state(self, name: str, value: int) -> None:
        raise KeyError(name)


class Json1Format:
    names: tuple[str, ...] = ("wasm32-unknown-unknown", "wasm64-unknown-unknown")

    def detect(self, module: wasmtime.Module) -> str | None:
        if module.imports:
            return None
        return self.names[1] if memory_export(module).is_64 else self.names[0]

    def check(self, module: wasmtime.Module, name: str) -> str:
        for imported in module.imports:
            raise ModuleError(
                f"module: imports {imported.module}.{imported.name}, which the plain {name} format does not provide"
            )
        pointer = "i64" if memory_export(module).is_64 else "i32"
        if (pointer == "i64") != (name == self.names[1]):
            raise ModuleError(f"module: its memory is {'64' if pointer == 'i64' else '32'}-bit, not {name}")
        check_exports(module, _NEEDS[pointer], name)
        return pointer

    def host(self, instance: Instance) -> Json1Host:
        return Json1Host(instance)
