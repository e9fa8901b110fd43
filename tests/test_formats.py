"""Every Module-Format that ao's loader (@permaweb/ao-loader) accepts, on tiny emscripten-shaped
modules written here in WAT: what each format's host serves, deterministically, and what it refuses
by name. tests/test_loader_diff.py holds the same builds against ao's loader itself.
"""

from __future__ import annotations

import struct

import orjson
import pytest
import wasmtime

from actorao import ModuleError
from actorao.vm import Evaluator, Instance, compile_module
from actorao.vm.formats import FORMATS

# index.cjs of @permaweb/ao-loader 0.0.49 dispatches on exactly these
AO_LOADER_FORMATS = (
    "wasm32-unknown-emscripten",
    "wasm32-unknown-emscripten2",
    "wasm32-unknown-emscripten3",
    "wasm32-unknown-emscripten4",
    "wasm32-unknown-emscripten-metering",
    "wasm64-unknown-emscripten-draft_2024_02_15",
    "wasm64-unknown-emscripten-draft_2024_10_16-metering",
)
CLOCK_AT = 2048  # where the modules below keep what the clock said
ANSWER = '{"ok":true,"response":{"Output":"done"}}'
_ANSWER_WAT = ANSWER.replace('"', '\\"') + "\\00"


def emscripten_module(*, names: dict[str, str] | None = None, date_import: str = "env.emscripten_date_now",
                      stack: tuple[str, str, str] = ("emscripten_stack_get_current", "_emscripten_stack_restore",
                                                     "_emscripten_stack_alloc"),
                      extra_import: str = "") -> bytes:
    """A wasm32 module shaped like an aos build: the clock it reads lands in memory at CLOCK_AT."""
    name = (names or {}).get
    module, field = date_import.split(".")
    current, restore, alloc = stack
    text = f"""
    (module
      (import "{module}" "{field}" (func $now (result f64)))
      {extra_import}
      (memory (export "{name('memory') or 'memory'}") 2)
      (table (export "{name('__indirect_function_table') or '__indirect_function_table'}") 1 funcref)
      (global $sp (mut i32) (i32.const 65536))
      (func (export "emscripten_stack_init"))
      (func (export "{name('__wasm_call_ctors') or '__wasm_call_ctors'}"))
      (func (export "emscripten_stack_get_end") (result i32) i32.const 1024)
      (func (export "{name(current) or current}") (result i32) global.get $sp)
      (func (export "{name(restore) or restore}") (param i32) local.get 0 global.set $sp)
      (func (export "{name(alloc) or alloc}") (param i32) (result i32)
        global.get $sp local.get 0 i32.sub i32.const -16 i32.and global.set $sp global.get $sp)
      (func (export "{name('setThrew') or 'setThrew'}") (param i32 i32))
      (func (export "{name('main') or 'main'}") (param i32 i32) (result i32) i32.const 0)
      (func (export "{name('handle') or 'handle'}") (param i32 i32) (result i32)
        i32.const {CLOCK_AT} call $now f64.store
        i32.const 4096)
      (data (i32.const 4096) "{_ANSWER_WAT}"))
    """
    return wasmtime.wat2wasm(text)


def clock_reads(instance: Instance, count: int, timestamp: int = 1_700_000_000_000) -> list[float]:
    evaluator = Evaluator()
    message = orjson.dumps({"Id": "m", "Timestamp": timestamp, "Tags": []})
    seen = []
    for _ in range(count):
        result, failed = evaluator.evaluate(instance, message, b"{}")
        assert not failed, result
        seen.append(struct.unpack("<d", instance.read(CLOCK_AT, 8))[0])
    return seen


@pytest.mark.parametrize("name", AO_LOADER_FORMATS)
def test_every_format_aos_loader_accepts_is_served(name: str) -> None:
    assert name in FORMATS


@pytest.mark.parametrize("name", ["wasm32-unknown-emscripten4", "wasm32-unknown-emscripten-metering"])
def test_time_is_the_clock_of_aos_glue_never_the_wall_clock_nor_the_timestamp(name: str) -> None:
    """ao's glue replaces Date.now with a counter from 10,000 ms, one up a read; its own start-up
    reads it 4 times. (aos's os.time() is the message's Timestamp: that is Lua's, not the host's.)"""
    instance = Instance(compile_module(emscripten_module(), name), memory_limit=1 << 20)
    assert clock_reads(instance, 3) == [10004.0, 10005.0, 10006.0]


def test_deliberate_difference_the_clock_is_kept_in_snapshots_where_aos_cu_restarts_it() -> None:
    """ao's CU drops its instance after an Error, and on a restart: its next clock reads 10,004
    again, so what a message sees depends on the CU's cache. Ours is state like memory: a restored
    snapshot carries on where it was, and results depend on the log alone."""
    compiled = compile_module(emscripten_module(), "wasm32-unknown-emscripten4")
    first = Instance(compiled, memory_limit=1 << 20)
    clock_reads(first, 2)
    moved = Instance(compiled, memory_limit=1 << 20)
    moved.restore(first.snapshot())
    assert moved.digest() == first.digest()  # the clock is part of the state a digest covers
    assert clock_reads(moved, 1) == [10006.0]  # ao's loader, on a fresh instance: 10004


def test_emscripten2_reads_time_as_its_glue_does_and_runs_main() -> None:
    wasm = emscripten_module(date_import="env._emscripten_date_now", stack=("stackSave", "stackRestore", "stackAlloc"),
                             extra_import='(import "env" "getTempRet0" (func (result i32)))'
                                          '(import "env" "setTempRet0" (func (param i32)))'
                                          '(import "env" "system" (func (param i32) (result i32)))'
                                          '(import "env" "__syscall_lstat64" (func (param i32 i32) (result i32)))'
                                          '(import "env" "emscripten_get_now" (func (result f64)))'
                                          '(import "env" "abort" (func))')
    compiled = compile_module(wasm)
    assert compiled.format == "wasm32-unknown-emscripten2"  # told apart by getTempRet0
    instance = Instance(compiled, memory_limit=1 << 20)
    assert clock_reads(instance, 2) == [0.0, 0.0]  # that glue's _emscripten_date_now answers 0
    # main(1, ["./this.program"]) ran at start, its arguments left on the stack as callMain leaves them
    assert b"./this.program\0" in instance.read(65536 - 64, 64)


def test_the_original_build_is_served_under_its_minified_names() -> None:
    minified = {"memory": "E", "__wasm_call_ctors": "F", "handle": "G", "main": "H",
                "__indirect_function_table": "I", "setThrew": "L", "stackSave": "M", "stackRestore": "N",
                "stackAlloc": "O"}
    wasm = emscripten_module(names=minified, date_import="a.a", stack=("stackSave", "stackRestore", "stackAlloc"))
    compiled = compile_module(wasm)
    assert compiled.format == "wasm32-unknown-emscripten"
    instance = Instance(compiled, memory_limit=1 << 20)
    assert clock_reads(instance, 1) == [0.0]


def test_an_import_that_no_format_serves_is_named() -> None:
    wasm = emscripten_module(extra_import='(import "env" "made_up_syscall" (func (param i32) (result i32)))')
    with pytest.raises(ModuleError, match=r"env\.made_up_syscall"):
        compile_module(wasm, "wasm32-unknown-emscripten4")
    with pytest.raises(ModuleError, match="not served here"):
        compile_module(emscripten_module(), "wasm32-unknown-emscripten5")


# The seven imports aos-llama's llama.wasm needs beyond aos's own (issue 13).
LLAMA_IMPORTS = (
    '(import "env" "__cxa_throw" (func (param i32 i32 i32)))'
    '(import "env" "emscripten_err" (func (param i32)))'
    '(import "env" "_munmap_js" (func (param i32 i32 i32 i32 i32 i64) (result i32)))'
    '(import "env" "emscripten_get_heap_max" (func (result i32)))'
    '(import "env" "strftime_l" (func (param i32 i32 i32 i32 i32) (result i32)))'
    '(import "env" "__assert_fail" (func (param i32 i32 i32 i32)))'
)


def test_the_imports_of_llama_wasm_are_served_and_its_clock_is_the_glues() -> None:
    """emscripten_get_now (llama.cpp's timings) reads the same counter as Date.now in ao's glue:
    never the wall clock, so two runs of one log time their tokens alike."""
    wasm = emscripten_module(date_import="env.emscripten_get_now", extra_import=LLAMA_IMPORTS)
    compiled = compile_module(wasm, "wasm32-unknown-emscripten4")
    first, second = (Instance(compiled, memory_limit=1 << 20) for _ in range(2))
    assert clock_reads(first, 3) == clock_reads(second, 3) == [10004.0, 10005.0, 10006.0]
    assert first.digest() == second.digest()
