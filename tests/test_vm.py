"""The wasmtime host, on real wasmtime. The fast call path is checked against the public API."""

from __future__ import annotations

import gc
import weakref

import orjson
import pytest
import wasmtime

from actorao import ComputeLimitExceeded, ModuleError, Trap, examples
from actorao.vm import Evaluator, HeldTooLong, Instance, compile_module
from actorao.vm._binary import export_mutable_globals, mutable_globals
from actorao.vm._engine import engine

ENV = b'{"Process":{"Id":"p","Owner":"o","Tags":[]}}'
LIMIT = 1 << 30


def msg(action: str, data: str = "") -> bytes:
    return orjson.dumps({"Tags": [{"name": "Action", "value": action}], "Data": data})


def public_api_call(name: str, messages: list[bytes]) -> list[bytes]:
    """The same calls through wasmtime-py's public API only."""
    store = wasmtime.Store(engine())
    store.set_fuel(10**9)
    instance = wasmtime.Instance(store, wasmtime.Module(engine(), examples.wasm(name)), [])
    exports = instance.exports(store)
    memory, malloc, handle = exports["memory"], exports["malloc"], exports["handle"]
    out = []
    for message in messages:
        pointers = []
        for text in (message, ENV):
            pointer = malloc(store, len(text) + 1)
            memory.write(store, text + b"\0", pointer)
            pointers.append(pointer)
        result = handle(store, *pointers)
        raw = memory.read(store, result, result + 4096)
        out.append(bytes(raw[: raw.index(0)]))
    return out


@pytest.mark.parametrize("name", examples.NAMES)
def test_fast_path_matches_public_api(name: str) -> None:
    messages = [msg("Inc"), msg("Inc", "é" * 300), msg("Get"), msg("Other", '"quoted"')]
    instance = Instance(compile_module(examples.wasm(name)), memory_limit=LIMIT)
    fast = [instance.call(m, ENV, 10**9) for m in messages]
    assert fast == public_api_call(name, messages)


def test_counter_counts_and_echo_echoes() -> None:
    evaluator = Evaluator()
    counter = Instance(compile_module(examples.wasm("counter")), memory_limit=LIMIT)
    outputs = [orjson.loads(evaluator.evaluate(counter, msg("Inc"), ENV)[0])["Output"] for _ in range(3)]
    assert outputs == ["1", "2", "3"]
    echo = Instance(compile_module(examples.wasm("echo")), memory_limit=LIMIT)
    result, failed = evaluator.evaluate(echo, msg("Say", "hello \\ \"world\""), ENV)
    assert not failed
    assert orjson.loads(result)["Output"]["Data"] == 'hello \\ "world"'


def test_a_trap_is_an_error_result() -> None:
    instance = Instance(compile_module(examples.wasm("trapper")), memory_limit=LIMIT)
    result, failed = Evaluator().evaluate(instance, msg("Trap"), ENV)
    assert failed
    assert orjson.loads(result)["Error"].startswith("Trap:")
    assert "unreachable" in orjson.loads(result)["Error"]


def test_fuel_bounds_an_endless_loop() -> None:
    instance = Instance(compile_module(examples.wasm("trapper")), memory_limit=LIMIT)
    with pytest.raises(ComputeLimitExceeded):
        instance.call(msg("Loop"), ENV, 1_000_000)
    assert instance.fuel_used == 1_000_000


def test_fuel_use_is_deterministic() -> None:
    used = []
    for _ in range(2):
        instance = Instance(compile_module(examples.wasm("counter")), memory_limit=LIMIT)
        instance.call(msg("Inc", "x" * 100), ENV, 10**9)
        used.append(instance.fuel_used)
    assert used[0] == used[1] > 0


def test_a_call_with_the_gil_held_gives_what_a_call_without_gives_until_its_fuel_runs_out() -> None:
    compiled = compile_module(examples.wasm("trapper"))
    free, held = Instance(compiled, memory_limit=LIMIT), Instance(compiled, memory_limit=LIMIT)
    for action in ("Inc", "Inc", "Get"):
        assert held.call(msg(action), ENV, 10**9, held=100_000) == free.call(msg(action), ENV, 10**9)
        assert held.fuel_used == free.fuel_used > 0
    assert held.digest() == free.digest()
    # held for less than the message may burn: that runs out first, and says so rather than failing
    with pytest.raises(HeldTooLong):
        held.call(msg("Loop"), ENV, 10**7, held=100_000)
    assert held.fuel_used == 100_000
    # held for as much as it may burn, or more: running out is the message's own failure
    for cap in (10**6, 10**7):
        with pytest.raises(ComputeLimitExceeded):
            Instance(compiled, memory_limit=LIMIT).call(msg("Loop"), ENV, 10**6, held=cap)


def test_snapshot_restores_memory_exactly_even_after_growth() -> None:
    compiled = compile_module(examples.wasm("trapper"))
    instance = Instance(compiled, memory_limit=LIMIT)
    instance.call(msg("Inc"), ENV, 10**9)
    snapshot = instance.snapshot()
    with pytest.raises(Trap):
        instance.call(msg("Grow"), ENV, 10**9)
    assert instance.memory_size() > len(snapshot.memory)
    fresh = Instance(compiled, memory_limit=LIMIT)
    fresh.restore(snapshot)
    assert fresh.digest() == snapshot.digest()
    assert orjson.loads(Evaluator().evaluate(fresh, msg("Get"), ENV)[0])["Output"] == "1"


def test_same_state_says_what_equal_digests_say_for_memory_globals_and_size() -> None:
    compiled = compile_module(bytes(wasmtime.wat2wasm(GLOBAL_COUNTER)))  # a global count, and a memory that can grow
    one, other = Instance(compiled, memory_limit=LIMIT), Instance(compiled, memory_limit=LIMIT)

    def both_ways() -> bool:
        same = one.same_state(other)
        assert other.same_state(one) is same and same is (one.digest() == other.digest())
        return same

    assert both_ways()
    one.call(msg("Inc"), ENV, 10**9)
    assert not both_ways()  # the global differs
    other.call(msg("Inc"), ENV, 10**9)
    assert both_ways()
    one.call(msg("Inc", "x" * 5000), ENV, 10**9)  # the same count; the message ends on a page the other never touched
    other.call(msg("Inc"), ENV, 10**9)
    assert not both_ways()
    grown, fresh = Instance(compiled, memory_limit=LIMIT), Instance(compiled, memory_limit=LIMIT)
    assert grown.same_state(fresh)
    with pytest.raises(Trap):
        grown.call(msg("Grow"), ENV, 10**9)
    assert grown.memory_size() > fresh.memory_size() and not grown.same_state(fresh) and not fresh.same_state(grown)
    nan = compile_module(bytes(wasmtime.wat2wasm(GLOBAL_COUNTER.replace("(f64.const inf)", "(f64.const nan)"))))
    one, other = Instance(nan, memory_limit=LIMIT), Instance(nan, memory_limit=LIMIT)
    assert one.same_state(other) and one.digest() == other.digest()  # a NaN global is the same NaN, as in a digest


def test_memory_limit_caps_growth() -> None:
    instance = Instance(compile_module(examples.wasm("trapper")), memory_limit=4 * 65536)
    with pytest.raises(Trap):
        instance.call(msg("Grow"), ENV, 10**9)
    assert instance.memory_size() <= 4 * 65536


@pytest.mark.parametrize(
    ("wasm", "needle"),
    [
        (b"not wasm at all", "not a WebAssembly binary"),
        (b"\0asm\x01\0\0\0\xff", "does not compile"),
        (wasmtime.wat2wasm('(module (memory (export "memory") 1))'), "'malloc'"),
        (
            wasmtime.wat2wasm(
                '(module (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) i32.const 0))'
            ),
            "'handle'",
        ),
        (wasmtime.wat2wasm('(module (func (export "handle")))'), "memory"),
        (wasmtime.wat2wasm('(module (import "env" "now" (func)) (memory (export "memory") 1))'), "env.now"),
        (
            wasmtime.wat2wasm(
                '(module (memory (export "memory") 1) (func (export "malloc") (param i32) (result i32) i32.const 0)'
                ' (func (export "handle") (param i32) (result i32) i32.const 0))'
            ),
            "wasm32-unknown-unknown needs",
        ),
    ],
)
def test_bad_modules_are_refused_with_the_reason(wasm: bytes, needle: str) -> None:
    with pytest.raises(ModuleError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        compile_module(bytes(wasm))


WASM64_ECHO = """
(module
  (memory (export "memory") i64 2)
  (global $hp (mut i64) (i64.const 65536))
  (data (i64.const 16) "{\\"ok\\":true,\\"response\\":{\\"Output\\":\\"wide\\"}}\\00")
  (func (export "malloc") (param $n i64) (result i64)
    (local $p i64)
    (local.set $p (global.get $hp))
    (global.set $hp (i64.add (global.get $hp) (local.get $n)))
    (local.get $p))
  (func (export "handle") (param i64 i64) (result i64)
    (global.set $hp (i64.const 65536))
    (i64.const 16)))
"""


def test_wasm64_modules_use_i64_pointers() -> None:
    compiled = compile_module(bytes(wasmtime.wat2wasm(WASM64_ECHO)))
    assert compiled.pointer == "i64"
    instance = Instance(compiled, memory_limit=LIMIT)
    assert orjson.loads(Evaluator().evaluate(instance, msg("Any"), ENV)[0])["Output"] == "wide"


def test_snapshot_includes_exported_mutable_globals() -> None:
    wat = WASM64_ECHO.replace("(global $hp (mut i64)", '(global $hp (export "hp") (mut i64)')
    instance = Instance(compile_module(bytes(wasmtime.wat2wasm(wat))), memory_limit=LIMIT)
    assert instance.snapshot().globals == (("hp", 65536),)


GLOBAL_COUNTER = examples.wat("trapper").replace(
    "(i64.store (i32.const 0) (i64.add (i64.load (i32.const 0)) (i64.const 1)))",
    "(global.set $n (i64.add (global.get $n) (i64.const 1)))",
).replace(
    "(call $reply_number (i64.load (i32.const 0)))", "(call $reply_number (global.get $n))"
).replace("(module\n", "(module\n (global $n (mut i64) (i64.const 0)) (global $f (mut f64) (f64.const inf))\n", 1)


def test_internal_mutable_globals_are_exported_so_snapshots_hold_them() -> None:
    wasm = bytes(wasmtime.wat2wasm(GLOBAL_COUNTER))
    assert [(g.index, g.type, g.exported_as) for g in mutable_globals(wasm)] == [(0, "i64", None), (1, "f64", None)]
    rewritten = export_mutable_globals(wasm)
    assert [g.exported_as for g in mutable_globals(rewritten)] == ["__actorao_global_0", "__actorao_global_1"]
    compiled = compile_module(wasm)
    instance = Instance(compiled, memory_limit=LIMIT)
    for _ in range(3):
        instance.call(msg("Inc"), ENV, 10**9)
    snapshot = instance.snapshot()
    assert dict(snapshot.globals) == {"__actorao_global_0": 3, "__actorao_global_1": float("inf")}
    fresh = Instance(compiled, memory_limit=LIMIT)
    fresh.restore(snapshot)
    assert orjson.loads(Evaluator().evaluate(fresh, msg("Get"), ENV)[0])["Output"] == "3"


def test_a_mutable_reference_global_is_refused() -> None:
    wat = '(module (global $r (mut funcref) (ref.null func)) (memory (export "memory") 1))'
    with pytest.raises(ModuleError, match="mutable global 0 has type"):
        compile_module(bytes(wasmtime.wat2wasm(wat)))


def test_the_emscripten_calendar_matches_pythons_for_every_year_it_has() -> None:
    import datetime
    import random

    from actorao.vm.formats.emscripten import _iso_week, _strftime, broken_down

    rng = random.Random(7)
    for _ in range(3000):
        seconds = rng.randint(-62135596800, 253402300799)  # years 1 to 9999
        when = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
        sec, minute, hour, mday, mon, year, wday, yday = broken_down(seconds)
        assert (year + 1900, mon + 1, mday, hour, minute, sec) == (
            when.year, when.month, when.day, when.hour, when.minute, when.second
        )
        assert (wday, yday) == ((when.weekday() + 1) % 7, when.timetuple().tm_yday - 1)
        assert _iso_week(year + 1900, yday, wday) == tuple(when.isocalendar())[:2]
        for spec in "aAbBdHjmMSUWVGgyY":
            assert _strftime(f"%{spec}", sec, minute, hour, mday, mon, year + 1900, wday, yday, "GMT") == (
                when.strftime(f"%{spec}")
            )
    assert broken_down(2**62) == (0,) * 8  # past a JS Date: zeros, as emscripten writes NaN


def test_a_dropped_instance_is_freed_at_once() -> None:
    """No cycle between an instance and its host: dropping the last reference frees the store and its
    linear memory then, not at some later garbage collection."""
    compiled = compile_module(examples.wasm("noop"))
    instance = Instance(compiled, memory_limit=1 << 26)
    store = weakref.ref(instance.store)
    del instance
    assert store() is None


CALLS_WAT = """
(module
  (import "host" "fail" (func $fail))
  (func (export "add") (param i32 i64) (result i64) local.get 1 local.get 0 i64.extend_i32_s i64.add)
  (func (export "negate") (param i32) (result i32) i32.const 0 local.get 0 i32.sub)
  (func (export "nothing"))
  (func (export "trap") unreachable)
  (func (export "through_host") call $fail)
  (func (export "half") (param f64) (result f64) local.get 0 f64.const 0.5 f64.mul))
"""


class HostFailure(Exception):
    """What the host function of CALLS_WAT raises: it must come out of the call as it went in."""


def test_fast_func_gives_what_the_public_call_gives() -> None:
    # CALLS_WAT instantiated in an instance's own store: fast_func calls through that store's context.
    instance = Instance(compile_module(examples.wasm("counter")), memory_limit=LIMIT)
    store = instance.store

    def fail() -> None:
        raise HostFailure("from the host")

    module = wasmtime.Module(engine(), wasmtime.wat2wasm(CALLS_WAT))
    exports = wasmtime.Instance(store, module, [wasmtime.Func(store, wasmtime.FuncType([], []), fail)]).exports(store)
    funcs = {name: exports[name] for name in ("add", "negate", "nothing", "trap", "through_host", "half")}
    fast = {name: instance.fast_func(func) for name, func in funcs.items()}
    assert fast["half"] is funcs["half"]  # a float signature keeps the public call
    for name, args in [("add", (-5, 2**40)), ("add", (7, -(2**63))), ("negate", (5,)), ("negate", (-(2**31),)),
                       ("nothing", ())]:
        assert fast[name](store, *args) == funcs[name](store, *args), (name, args)
    assert fast["add"](store, -5, 2**40) == 2**40 - 5 and fast["negate"](store, 5) == -5
    for name, kind in [("trap", wasmtime.Trap), ("through_host", HostFailure)]:
        with pytest.raises(kind) as public:
            funcs[name](store)
        with pytest.raises(kind) as ours:
            fast[name](store)
        assert str(ours.value) == str(public.value)
    with pytest.raises(wasmtime.WasmtimeError):
        fast["add"](store, 1)
    # and the instance still runs its own module afterwards
    assert orjson.loads(Evaluator().evaluate(instance, msg("Inc"), ENV)[0])["Output"] == "1"


HOST_CALLS_WAT = """
(module
  (import "host" "twice" (func $twice (param i32) (result i32)))
  (import "host" "sum" (func $sum (param i64 i32 f64) (result i64)))
  (import "host" "now" (func $now (result f64)))
  (import "host" "fail" (func $fail (param i32)))
  (import "host" "answers" (func $answers (param i32)))
  (func (export "twice") (param i32) (result i32) local.get 0 call $twice)
  (func (export "sum") (param i64 i32 f64) (result i64) local.get 0 local.get 1 local.get 2 call $sum)
  (func (export "now") (result f64) call $now)
  (func (export "fail") i32.const 7 call $fail)
  (func (export "answers") i32.const 1 call $answers))
"""


def test_host_func_gives_what_wasmtime_func_gives() -> None:
    """The same module and host functions, imported once through wasmtime-py's Func and once through
    Instance.host_func: the same arguments reach the host, and the same results and exceptions leave."""
    instance = Instance(compile_module(examples.wasm("counter")), memory_limit=LIMIT)
    store = instance.store
    module = wasmtime.Module(engine(), wasmtime.wat2wasm(HOST_CALLS_WAT))
    seen: list[tuple[object, ...]] = []

    def twice(value: int) -> int:
        seen.append(("twice", value))
        return value * 2 + 2**32  # past 32 bits: cut to them on the way back, both ways

    def sum_(wide: int, narrow: int, real: float) -> int:
        seen.append(("sum", wide, narrow, real))
        return wide + narrow + int(real)

    def now() -> float:
        return 1.7e12 + 0.25

    def fail(code: int) -> None:
        raise HostFailure(f"failed with {code}")

    def answers(value: int) -> int:
        return value  # though its type has no result

    handlers = [twice, sum_, now, fail, answers]

    def exports(make: object) -> dict[str, wasmtime.Func]:
        funcs = [make(imported.type, handler)  # type: ignore[operator]
                 for imported, handler in zip(module.imports, handlers, strict=True)]
        found = wasmtime.Instance(store, module, funcs).exports(store)
        return {name: found[name] for name in ("twice", "sum", "now", "fail", "answers")}

    public = exports(lambda ty, handler: wasmtime.Func(store, ty, handler))
    raw = exports(instance.host_func)
    calls = [("twice", (21,)), ("twice", (-(2**31),)), ("twice", (2**31 - 1,)),
             ("sum", (-(2**62), -5, 2.75)), ("sum", (2**63 - 1, -1, 0.0)), ("now", ())]
    for name, args in calls:
        seen.clear()
        expected, public_seen = public[name](store, *args), list(seen)
        seen.clear()
        assert raw[name](store, *args) == expected and seen == public_seen, (name, args)
    assert raw["twice"](store, 21) == 42 and raw["twice"](store, -(2**31)) == 0 and raw["now"](store) == 1.7e12 + 0.25
    assert raw["sum"](store, -(2**62), -5, 2.75) == -(2**62) - 3
    for name, kind in [("fail", HostFailure), ("answers", wasmtime.WasmtimeError)]:
        with pytest.raises(kind) as theirs:
            public[name](store)
        with pytest.raises(kind) as ours:
            raw[name](store)
        assert str(ours.value) == str(theirs.value) and str(ours.value)
    assert str(ours.value) == "callback produced results when it shouldn't"


def test_host_funcs_live_as_long_as_their_store() -> None:
    from actorao.vm._instance import _HOST_CALLBACKS

    gc.collect()  # stores that earlier tests left in cycles: a collection mid-test would free theirs
    before = len(_HOST_CALLBACKS)
    instance = Instance(compile_module(examples.wasm("counter")), memory_limit=LIMIT)
    funcs = [instance.host_func(wasmtime.FuncType([wasmtime.ValType.i32()], []), lambda value: None)
             for _ in range(3)]
    assert len(_HOST_CALLBACKS) == before + 3
    store = weakref.ref(instance.store)
    del instance, funcs
    assert store() is None and len(_HOST_CALLBACKS) == before  # the store's drop released each callback


def test_output_that_is_not_utf8_reads_as_ao_loader_reads_it() -> None:
    """Text an LLM makes from random weights may be any bytes: U+FFFD stands for what is not UTF-8,
    as emscripten's UTF8ToString gives ao's loader."""
    wasm = wasmtime.wat2wasm("""
    (module
      (memory (export "memory") 1)
      (func (export "malloc") (param i32) (result i32) i32.const 1024)
      (func (export "handle") (param i32 i32) (result i32) i32.const 4096)
      (data (i32.const 4096) "{\\"ok\\":true,\\"response\\":{\\"Output\\":\\"a\\ffb\\"}}\\00"))
    """)
    result, failed = Evaluator().evaluate(Instance(compile_module(wasm), memory_limit=1 << 20), b"{}", b"{}")
    assert not failed, result
    assert orjson.loads(result)["Output"] == "a\ufffdb"


@pytest.mark.parametrize("length", [10, 70_000, 200_000])
def test_a_result_string_is_read_whole_however_long(length: int) -> None:
    """The NUL is searched a stretch at a time: a result longer than the first stretch reads whole."""
    prefix = '{"ok":true,"response":{"Output":"'
    quoted = prefix.replace('"', '\\"')
    wasm = wasmtime.wat2wasm(f"""
    (module
      (memory (export "memory") 5)
      (func (export "malloc") (param i32) (result i32) i32.const 1024)
      (func (export "handle") (param i32 i32) (result i32)
        (memory.fill (i32.const {4096 + len(prefix)}) (i32.const 120) (i32.const {length}))
        i32.const 4096)
      (data (i32.const 4096) "{quoted}")
      (data (i32.const {4096 + len(prefix) + length}) "\\"}}}}\\00"))
    """)
    result, failed = Evaluator().evaluate(Instance(compile_module(wasm), memory_limit=1 << 20), b"{}", b"{}")
    assert not failed, result[:200]
    assert orjson.loads(result)["Output"] == "x" * length


@pytest.mark.parametrize("start", [65536 * 5 - 100, 4096])
def test_a_result_string_without_its_nul_is_a_trap(start: int) -> None:
    wasm = wasmtime.wat2wasm(f"""
    (module
      (memory (export "memory") 5)
      (func (export "malloc") (param i32) (result i32) i32.const 1024)
      (func (export "handle") (param i32 i32) (result i32)
        (memory.fill (i32.const {start}) (i32.const 120) (i32.const {65536 * 5 - start}))
        i32.const {start}))
    """)
    result, failed = Evaluator().evaluate(Instance(compile_module(wasm), memory_limit=1 << 20), b"{}", b"{}")
    assert failed
    assert orjson.loads(result)["Error"] == f"Trap: the string at {start} is not NUL-terminated inside memory"
