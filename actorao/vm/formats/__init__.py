"""Module formats: the host glue behind ao's Module-Format tag, one file per family.

    json1.py        wasm32-unknown-unknown, wasm64-unknown-unknown: no imports
    emscripten.py   wasm32-unknown-emscripten{,2,3,4}, wasm64-unknown-emscripten-draft_2024_02_15: aos
"""

from __future__ import annotations

from actorao._exceptions import ModuleError
from actorao.vm.formats._base import Format, Host
from actorao.vm.formats.emscripten import EmscriptenFormat
from actorao.vm.formats.json1 import Json1Format

__all__ = ["FORMATS", "Format", "Host", "detect_format", "format_named"]

_FAMILIES: tuple[Format, ...] = (Json1Format(), EmscriptenFormat())
FORMATS: dict[str, Format] = {name: family for family in _FAMILIES for name in family.names}


def format_named(name: str) -> Format:
    family = FORMATS.get(name)
    if family is None:
        raise ModuleError(f"Module-Format {name!r} is not served here; this node serves {', '.join(FORMATS)}")
    return family


def detect_format(module: object) -> str:
    """The Module-Format a module's imports and memory say it is, when no tag says so."""
    import wasmtime

    assert isinstance(module, wasmtime.Module)
    for family in _FAMILIES:
        name = family.detect(module)
        if name is not None:
            return name
    first = module.imports[0]
    raise ModuleError(
        f"module: imports {first.module}.{first.name}, which no served Module-Format provides "
        "(plain modules import nothing; emscripten modules import from env and wasi_snapshot_preview1)"
    )
