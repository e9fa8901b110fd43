"""One process's live instance, and the fast call path through it.

wasmtime-py's public ``Func.__call__`` converts every value through Python objects on each call (about
50 µs a message cycle). This module calls ``wasmtime_func_call_unchecked`` directly with raw values and
reads linear memory through its base address: about a tenth of that. It leans on wasmtime-py internals
(``_func``, ``_memory``, ``_context()`` and ``_ffi``), so the version is pinned in setup.cfg and
tests/test_vm.py runs this path against the public one.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import mmap
import struct
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import _bindings as raw
from wasmtime import _ffi as ffi
from wasmtime import _func as wasmtime_func

from actorao._exceptions import ActoraoError, ComputeLimitExceeded, Trap
from actorao.vm._engine import engine
from actorao.vm._module import CompiledModule
from actorao.vm._pages import PAGE as PAGE_4K
from actorao.vm._pages import (
    address,
    copy_runs,
    equal_runs,
    merge_runs,
    new_buffer,
    page_runs,
    restore_pages,
    touched_runs,
)

_libc = ctypes.CDLL(None)
_memchr = _libc.memchr
_memchr.restype = ctypes.c_void_p
_memchr.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
DIFF_PAGE = PAGE_4K  # the unit of checkpoint deltas

_call_unchecked = raw._wasmtime_func_call_unchecked


class HeldTooLong(Exception):  # not an error: a signal to run the message again, without the GIL held
    """A call made with the GIL held (``Instance.call``'s ``held``) used up the fuel it was allowed so
    held, before the message's own fuel ran out. The instance is then in an unknown state, as after any
    failed call: the caller puts it back as it was before the message and runs the message again
    without ``held``. Nothing else tells the two runs apart: fuel is counted the same either way."""


def _plain(name: str, restype: Any, *argtypes: Any, keep_gil: bool = False) -> Any:
    """wasmtime's C function ``name`` again, on plain addresses (c_void_p) and plain results, for the
    calls of every message: wasmtime-py's binding builds and checks typed pointer objects each call.
    ``keep_gil`` for calls that never run wasm code: they return in well under a microsecond, less
    than it costs to let the GIL go and take it back."""
    prototype = ctypes.PYFUNCTYPE if keep_gil else ctypes.CFUNCTYPE
    return prototype(restype, *argtypes)((name, ffi.dll))


_V = ctypes.c_void_p
_call_plain = _plain("wasmtime_func_call_unchecked", _V, _V, _V, _V, ctypes.c_size_t, _V)
# The same call holding the GIL, for ``call(..., held=...)``: each call that lets the GIL go must take
# it back, and in a worker whose other threads want it too, every one of a small message's three calls
# waited for a hand-off: a worker alone on 100 counters spent 96-103 µs of CPU a message, 41-51 held.
_call_held = _plain("wasmtime_func_call_unchecked", _V, _V, _V, _V, ctypes.c_size_t, _V, keep_gil=True)
_set_fuel = _plain("wasmtime_context_set_fuel", _V, _V, ctypes.c_uint64, keep_gil=True)
_get_fuel = _plain("wasmtime_context_get_fuel", _V, _V, _V, keep_gil=True)
_memory_data = _plain("wasmtime_memory_data", _V, _V, _V, keep_gil=True)
_memory_data_size = _plain("wasmtime_memory_data_size", ctypes.c_size_t, _V, _V, keep_gil=True)
# memchr holding the GIL, for the first stretch of a string; the rest (a string that runs on for
# megabytes, or not NUL-terminated at all) is searched with the GIL let go
_memchr_held = ctypes.PYFUNCTYPE(_V, _V, ctypes.c_int, ctypes.c_size_t)(("memchr", _libc))
_MEMCHR_HELD = 1 << 16
# a memoryview straight onto linear memory, with no ctypes array type made for its size
_view_of = ctypes.pythonapi.PyMemoryView_FromMemory
_view_of.restype = ctypes.py_object
_view_of.argtypes = [_V, ctypes.c_ssize_t, ctypes.c_int]
_PYBUF_WRITE = 0x200
_ERROR_POINTER = ctypes.POINTER(ffi.wasmtime_error_t)
_TRAP_POINTER = ctypes.POINTER(ffi.wasm_trap_t)
_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_val_raw)
_pack_arg = struct.Struct("<q").pack_into
_I64 = struct.Struct("<q").unpack_from  # a result, as the i64 it is
_U32 = struct.Struct("<I").unpack_from  # a result, as the unsigned wasm32 pointer it is
_OUT_OF_FUEL = wasmtime.TrapCode.OUT_OF_FUEL
_error_delete = raw._wasmtime_error_delete
_new_host_func = raw._wasmtime_func_new_unchecked
_host_callback = raw.wasmtime_func_unchecked_callback_t
# wasmtime_trap_new again, returning the plain address that a host callback hands back
_trap_new = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t)(("wasmtime_trap_new", ffi.dll))
_RAISED = b"python exception"  # the trap's text when a host function raised: the exception is what is kept
# Each host_func's ctypes callback, alive until the store that calls it is dropped and says so.
_HOST_CALLBACKS: dict[int, object] = {}
_host_callback_ids = itertools.count(1)
_RAW_TYPES = {"i32", "i64", "f32", "f64"}


def _forget(key: int | None) -> None:
    _HOST_CALLBACKS.pop(key or 0, None)


_forget_host_callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_forget)

PAGE = 65536
# The exception a host function raised, kept for the call that made it. wasmtime-py keeps it in one
# module global until the caller re-raises it; a worker evaluates processes on several threads, and
# one thread would take another's (a longjmp of aos's, say). Kept per thread here instead, and
# wasmtime-py's public call path reads it from here too.
_pending = threading.local()
_kept_per_thread: weakref.WeakSet[BaseException] = weakref.WeakSet()
HOST_STATE = "__actorao_host_"  # snapshot entries the host keeps, beside the module's globals


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A process's whole mutable state between messages: its linear memory and its mutable globals.

    A snapshot made by ``Instance.update_snapshot`` shares its memory buffer with the one it updated:
    the buffer of a process's latest checkpoint is kept current in place, page by changed page."""

    memory: bytes | bytearray | mmap.mmap
    globals: tuple[tuple[str, int | float], ...]
    written: set[int] | None = None  # every page of ``memory`` that may not be zero, when known

    def digest(self) -> str:
        return memory_digest(self.memory, self.globals)


def memory_digest(
    memory: bytes | bytearray | mmap.mmap | memoryview, globals_: tuple[tuple[str, int | float], ...] = ()
) -> str:
    digest = hashlib.sha256(memory)
    digest.update(repr(globals_).encode())
    return digest.hexdigest()


class HostResourceError(RuntimeError):
    """The host ran out of a resource. Not a module error: it must never become a stored result."""


def _last_line(text: str) -> str:
    """wasmtime's trap text ends with the cause; the backtrace above it names no source here."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


class Instance:
    """A module instantiated in a store of its own, with fuel and a memory limit, behind the host
    that its Module-Format asks for."""

    def __init__(self, compiled: CompiledModule, *, memory_limit: int, fuel: int = 10**10) -> None:
        from actorao.vm.formats import format_named

        self.store = wasmtime.Store(engine())
        self.store.set_limits(memory_size=memory_limit)
        self.store.set_fuel(fuel)  # start code runs during instantiation, metered like a call
        self.memory_limit = memory_limit
        self._ctx = self.store._context()
        self._ctx_at = ctypes.cast(self._ctx, _V).value
        # The arguments and result of ``invoke``, packed and unpacked through a view of their bytes.
        self._args = (ffi.wasmtime_val_raw * 4)()
        self._args_at = ctypes.addressof(self._args)
        self._args_bytes = memoryview(self._args).cast("B")
        self._trap = _V()
        self._trap_at = ctypes.addressof(self._trap)
        self._wide = compiled.pointer == "i64"
        self._result = _I64 if self._wide else _U32
        self._fuel_left = ctypes.c_uint64(0)
        self._fuel_left_at = ctypes.addressof(self._fuel_left)
        self._view = memoryview(b"")  # linear memory, as it was when last asked (``_memory``)
        self._view_base = 0
        self._fuel_given = 0  # by the last ``call``: ``fuel_used`` reads what is left only when asked
        self._call = _call_plain  # ``_call_held`` during a held ``call``
        self.format = compiled.format
        self.host = format_named(compiled.format).host(self)
        try:
            instance = wasmtime.Instance(self.store, compiled.module, self.host.imports(self.store, compiled.module))
            exports = instance.exports(self.store)
            memory = exports[self.host.export_names.get("memory", "memory")]
            assert isinstance(memory, wasmtime.Memory)
            self.memory = memory
            self._memory_at = ctypes.addressof(memory._memory)
            self.host.start(exports)
        except wasmtime.Trap as exc:
            _raise_pending_host_error()
            if exc.trap_code == _OUT_OF_FUEL:
                raise ComputeLimitExceeded("ComputeLimitExceeded: instantiation ran out of fuel") from exc
            raise Trap(f"Trap: instantiation failed: {_last_line(exc.message)}") from exc
        except wasmtime.WasmtimeError as exc:
            if "os error 12" in str(exc):  # ENOMEM: the host is out of memory, not the module's fault
                raise HostResourceError(f"cannot instantiate: the host is out of memory ({exc})") from exc
            raise Trap(f"Trap: instantiation failed: {_last_line(str(exc))}") from exc
        handle = exports[self.host.export_names.get("handle", "handle")]
        assert isinstance(handle, wasmtime.Func)
        self._handle_ref = self.raw_func(handle)
        self._mutable_globals = {
            name: extern
            for name, extern in exports.items()
            if isinstance(extern, wasmtime.Global) and extern.type(self.store).mutable
        }

    def _state(self) -> tuple[tuple[str, int | float], ...]:
        """The mutable globals, and what the host keeps for the module outside its memory (the clock
        of ao's glue), under names no export can have."""
        values = tuple((name, g.value(self.store)) for name, g in sorted(self._mutable_globals.items()))
        return values + tuple((HOST_STATE + name, value) for name, value in self.host.host_state())

    # -- memory ---------------------------------------------------------------------------------
    def _base(self) -> tuple[int, int]:
        """Where linear memory is now, and its size: both can change whenever wasm code runs."""
        return _memory_data(self._ctx_at, self._memory_at) or 0, _memory_data_size(self._ctx_at, self._memory_at)

    def _memory(self) -> tuple[memoryview, int]:
        """Linear memory as a writable view, and where it starts; valid until wasm code next runs.
        wasmtime moves a memory only when it grows, so its size alone says whether the view made
        last time still holds."""
        size = _memory_data_size(self._ctx_at, self._memory_at)
        if size != len(self._view):
            base = _memory_data(self._ctx_at, self._memory_at) or 0
            self._view = _view_of(base, size, _PYBUF_WRITE) if base else memoryview(b"")
            self._view_base = base
        return self._view, self._view_base

    def memory_size(self) -> int:
        return self._base()[1]

    def effective_memory_limit(self) -> int:
        """The Memory-Limit, or the module's own declared maximum where that is lower."""
        declared = self.memory.type(self.store).limits.max
        return self.memory_limit if declared is None else min(self.memory_limit, declared * PAGE)

    def read_memory(self) -> bytes:
        base, size = self._base()
        return ctypes.string_at(base, size)

    def read(self, pointer: int, length: int) -> bytes:
        base, size = self._base()
        if pointer < 0 or length < 0 or pointer + length > size:
            raise Trap(f"Trap: read of {length} bytes at {pointer} is outside memory of {size} bytes")
        return ctypes.string_at(base + pointer, length)

    def write(self, pointer: int, data: bytes) -> None:
        base, size = self._base()
        if pointer < 0 or pointer + len(data) > size:
            raise Trap(f"Trap: write of {len(data)} bytes at {pointer} is outside memory of {size} bytes")
        ctypes.memmove(base + pointer, data, len(data))

    def copy(self, destination: int, source: int, length: int) -> None:
        base, size = self._base()
        if min(destination, source, length) < 0 or max(destination, source) + length > size:
            raise Trap(f"Trap: copy of {length} bytes from {source} to {destination} is outside memory")
        ctypes.memmove(base + destination, base + source, length)

    def read_string(self, pointer: int) -> bytes:
        """The NUL-terminated string at ``pointer``, which must end inside memory."""
        view, base = self._memory()
        size = len(view)
        if not 0 < pointer < size:
            raise Trap(f"Trap: string pointer {pointer} is outside memory of {size} bytes")
        start = base + pointer
        end = _memchr_held(start, 0, min(size - pointer, _MEMCHR_HELD))
        if end is None and size - pointer > _MEMCHR_HELD:
            end = _memchr(start + _MEMCHR_HELD, 0, size - pointer - _MEMCHR_HELD)
        if end is None:
            raise Trap(f"Trap: the string at {pointer} is not NUL-terminated inside memory")
        return view[pointer : end - base].tobytes()

    def write_strings(self, pointers: tuple[int, ...], texts: tuple[bytes, ...]) -> None:
        view = self._memory()[0]  # once, after the allocations: any of them may have grown memory
        size = len(view)
        for pointer, text in zip(pointers, texts, strict=True):
            end = pointer + len(text)
            if pointer <= 0 or end + 1 > size:
                raise Trap(f"Trap: allocation returned {pointer}, outside memory of {size} bytes")
            view[pointer:end] = text
            view[end] = 0

    def snapshot(self) -> Snapshot:
        """The current state, in a buffer that holds only the pages that are not zero."""
        values = self._state()
        base, size = self._base()
        memory = new_buffer(size)
        return Snapshot(memory, values, set(copy_runs(address(memory), base, self._touched(base, size))))

    def update_snapshot(self, previous: Snapshot | None) -> tuple[Snapshot, list[int]]:
        """The current state as a snapshot, and the DIFF_PAGE-sized pages changed since ``previous``
        (None: since a memory of zeros, so its non-zero pages). ``previous``'s buffer is brought up to
        date in place, copying only the changed pages (a new buffer when the memory grew). The scan
        reads both sides once (1 MiB spans, then the pages of the spans that differ): about 0.2 s for
        llama.wasm's 1.2 GiB, and what it writes is only what changed."""
        values = self._state()
        base, size = self._base()
        kept = None if previous is None else previous.memory
        if kept is not None and size < len(kept):
            raise ValueError("memory is smaller than the snapshot it should update")
        written = None if previous is None else previous.written
        if kept is None or isinstance(kept, bytes) or size > len(kept) or written is None:
            grown = new_buffer(size)
            if kept is not None:
                old = [(0, len(kept))] if written is None else page_runs(written, len(kept))
                written = set(copy_runs(address(grown), address(kept), old))
            kept, written = grown, written or set()
        # Only pages the instance touched, or the snapshot holds, can differ: the rest are zeros on both sides.
        changed = copy_runs(address(kept), base, merge_runs(self._touched(base, size), page_runs(written, size)))
        written.update(changed)
        return Snapshot(kept, values, written), changed

    @staticmethod
    def _touched(base: int, size: int) -> list[tuple[int, int]]:
        """The runs of linear memory that may not be zero: those ever touched, or all when unknown."""
        runs = touched_runs(base, size)
        return [(0, size)] if runs is None else runs

    def writable_memory(self, size: int) -> memoryview:
        """Linear memory grown to ``size`` bytes, as a writable view, to restore into in place.
        Valid until wasm code next runs."""
        current = self.memory_size()
        if current > size:
            raise ValueError("cannot restore a smaller memory into this instance; use a fresh one")
        if current < size:
            self.memory.grow(self.store, (size - current) // PAGE)
        base, size = self._base()
        return memoryview((ctypes.c_char * size).from_address(base)).cast("B")

    def set_globals(self, values: tuple[tuple[str, int | float], ...]) -> None:
        for name, value in values:
            if name.startswith(HOST_STATE):
                self.host.set_host_state(name[len(HOST_STATE):], int(value))
            else:
                self._mutable_globals[name].set_value(self.store, value)

    def restore(self, snapshot: Snapshot) -> None:
        """Put ``snapshot`` back, writing only the pages that differ. Memory cannot shrink, so a larger
        current memory is refused."""
        size = len(snapshot.memory)
        self.writable_memory(size).release()
        restore_pages(self._base()[0], address(snapshot.memory), size, snapshot.written)
        self.set_globals(snapshot.globals)

    def digest(self) -> str:
        """SHA-256 of memory and globals, as Snapshot.digest gives, without copying the memory."""
        base, size = self._base()
        values = self._state()
        return memory_digest(memoryview((ctypes.c_char * size).from_address(base)), values)

    def same_state(self, other: Instance) -> bool:
        """Whether ``other`` holds the same memory and globals as this instance, as equal ``digest``s
        say, at the speed of a compare: only the pages either has touched are read (the rest are zeros
        on both sides). A replay checked against the live process after every message, say."""
        (base, size), (other_base, other_size) = self._base(), other._base()
        if size != other_size or repr(self._state()) != repr(other._state()):  # as the digest has them: NaN is NaN
            return False
        return equal_runs(base, other_base, merge_runs(self._touched(base, size), other._touched(other_base, size)))

    # -- calls ----------------------------------------------------------------------------------
    @staticmethod
    def raw_func(func: wasmtime.Func) -> object:
        """A handle for ``invoke``: the function's raw wasmtime_func_t, by reference."""
        return ctypes.byref(func._func)

    def fast_func(self, func: wasmtime.Func) -> Callable[..., Any]:
        """``func`` as a callable that does what wasmtime-py's ``func(store, *args)`` does, taking the same
        arguments (the store is ignored: it is this instance's) and giving back the same values and the
        same exceptions, a host function's own one re-raised as it was (a longjmp's, say), but through the
        unchecked path without wasmtime-py's per-call conversions through ``Val`` objects. Only for
        functions of i32 and i64 values, one result at most; any other is handed back as it is."""
        ty = func.type(self.store)
        params, results = [str(t) for t in ty.params], [str(t) for t in ty.results]
        if len(results) > 1 or not set(params + results) <= {"i32", "i64"}:
            return func
        ctx, func_ref = self._ctx, self.raw_func(func)
        count = max(len(params), len(results), 1)
        # One buffer per function: a nested call of the same function reads its arguments on entry and
        # writes its result on return, so the outer call's result is written after the inner's is read.
        values = (ffi.wasmtime_val_raw * count)()
        # The same buffer as whole words: a value is 16 bytes, so argument n is word 2n; an i32 is read
        # from its low half, and a negative one written as an i64 has the same low half. One slice
        # assignment writes them all, without a ctypes union object made for each.
        words = (ctypes.c_int64 * (2 * count)).from_buffer(values)
        result_of = words if results == ["i64"] else (ctypes.c_int32 * (4 * count)).from_buffer(values)
        arity, arguments = len(params), slice(0, 2 * len(params), 2)
        result = results[0] if results else None
        trap_type, error_type = ctypes.POINTER(ffi.wasm_trap_t), wasmtime.WasmtimeError
        trap_from, raise_pending = wasmtime.Trap._from_ptr, _raise_host_exception

        def call(store: object, *args: int) -> Any:
            if len(args) != arity:
                raise error_type(f"{len(args)} parameters given, {arity} expected")
            words[arguments] = args  # type: ignore[call-overload]  # any sequence does; typeshed says list
            trap = trap_type()  # a fresh one each call: a nested call may trap while this one runs
            error = _call_unchecked(ctx, func_ref, values, count, ctypes.byref(trap))
            if error:  # as wasmtime-py's enter_wasm: a host function's exception first, else wasmtime's
                if _host_exception_pending():  # aos's longjmp, once a message: no text needed
                    _error_delete(error)
                    raise_pending()
                raise error_type._from_ptr(error)
            if trap:
                failure = trap_from(trap)
                raise_pending()
                raise failure
            return None if result is None else result_of[0]

        return call

    def host_func(self, ty: wasmtime.FuncType, handler: Callable[..., Any]) -> wasmtime.Func:
        """A function of this instance's store that calls ``handler`` as ``wasmtime.Func(store, ty, handler)``
        does, with the same values (integers signed, as wasmtime-py gives them), the same results and a
        raised exception kept for the caller to re-raise as it was, but through wasmtime's unchecked
        callback: raw values in place, without the Caller and the Val objects that wasmtime-py builds for
        every call (8 against 1.3 µs a call, and aos makes some twenty a message). Only for numbers and
        one result at most; any other signature gets wasmtime-py's own."""
        params, results = [str(t) for t in ty.params], [str(t) for t in ty.results]
        if len(results) > 1 or not set(params + results) <= _RAW_TYPES:
            return wasmtime.Func(self.store, ty, host_function(handler))
        slots = tuple(enumerate(params))
        result = results[0] if results else None
        error_type = wasmtime.WasmtimeError

        def call(env: int, caller: object, values: Any, count: int) -> int:
            try:
                value = handler(*[getattr(values[index], kind) for index, kind in slots])
                if result is not None:
                    setattr(values[0], result, value)  # after every argument is read: they share the slots
                elif value is not None:
                    raise error_type("callback produced results when it shouldn't")
                return 0
            except BaseException as exc:  # as wasmtime-py's trampoline: kept aside, wasm unwound by a trap
                _pending.exception = exc  # for the call on this thread that made it (see host_function)
                return _trap_new(_RAISED, len(_RAISED)) or 0

        callback = _host_callback(call)
        key = next(_host_callback_ids)
        _HOST_CALLBACKS[key] = callback
        func = ffi.wasmtime_func_t()
        _new_host_func(self._ctx, ty.ptr(), callback, key, _forget_host_callback, ctypes.byref(func))
        return wasmtime.Func._from_raw(func)

    def invoke(self, func_ref: object, *values: int) -> int:
        """Call a function taking and returning pointer-sized integers, through the unchecked path.
        Each value is written as 8 bytes into its slot: an i32 reads the low four, the same bits."""
        args = self._args_bytes
        at = 0
        for value in values:
            _pack_arg(args, at, value)
            at += _VAL_SIZE
        error = self._call(self._ctx_at, func_ref, self._args_at, len(values) or 1, self._trap_at)
        if error:
            error_pointer = ctypes.cast(error, _ERROR_POINTER)
            if _host_exception_pending():
                _error_delete(error_pointer)  # the exception is what matters; the error only says there was one
                _raise_pending_host_error()
            raise Trap(f"Trap: {wasmtime.WasmtimeError._from_ptr(error_pointer)}")
        if self._trap.value:
            trap = wasmtime.Trap._from_ptr(ctypes.cast(self._trap.value, _TRAP_POINTER))
            self._trap.value = None
            _raise_pending_host_error()
            if trap.trap_code == _OUT_OF_FUEL:
                raise ComputeLimitExceeded("ComputeLimitExceeded: the message ran out of fuel")
            raise Trap(f"Trap: {_last_line(trap.message)}")
        result: int = self._result(args)[0]
        return result

    def call(self, message: bytes, env: bytes, fuel: int, held: int = 0) -> bytes:
        """Run ``handle(message, env)`` under ``fuel`` and return the result string's bytes.

        With ``held``, wasm runs with the GIL held (no other thread of this process runs meanwhile) for
        at most ``held`` of the fuel: where that runs out before ``fuel`` does, HeldTooLong is raised.

        Raises ComputeLimitExceeded, MemoryLimitExceeded, Trap or HeldTooLong. After a raise the
        instance is in an unknown state: callers roll back by restoring into a fresh instance.
        """
        capped = 0 < held < fuel
        given = held if capped else fuel
        error = _set_fuel(self._ctx_at, given)
        if error:
            raise Trap(f"Trap: {wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, _ERROR_POINTER))}")
        host = self.host
        host.begin(message)
        if held:
            self._call = _call_held
        try:
            pointers = host.place(message, env)
            out = self.invoke(self._handle_ref, *pointers)
            while host.rewinding():  # an async import unwound the call: rewind into it, arguments and all
                out = self.invoke(self._handle_ref, *pointers)
            return self.read_string(out)
        except ComputeLimitExceeded as exc:  # however it was raised: by this call, or by a nested one
            if capped:
                raise HeldTooLong(f"the message used more than the {held} fuel it may use held") from exc
            raise
        finally:
            self._call = _call_plain
            host.end()
            self._fuel_given = given

    @property
    def fuel_used(self) -> int:
        """The fuel the last ``call`` burned, its host's end included. Nothing else runs code of this
        store between calls, so what is left is still there to read."""
        if not self._fuel_given:
            return 0
        error = _get_fuel(self._ctx_at, self._fuel_left_at)
        if error:
            raise Trap(f"Trap: {wasmtime.WasmtimeError._from_ptr(ctypes.cast(error, _ERROR_POINTER))}")
        return self._fuel_given - self._fuel_left.value


def host_function(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` as a host import whose exception is kept for the call on this thread that made it."""

    def guarded(*args: Any) -> Any:
        try:
            return handler(*args)
        except BaseException as exc:
            _pending.exception = exc
            _kept_per_thread.add(exc)  # wasmtime-py's global copy of it is not for other threads
            raise

    return guarded


def _host_exception_pending() -> bool:
    """Whether a host function raised, on this thread (or, for one not made here, anywhere)."""
    return getattr(_pending, "exception", None) is not None or wasmtime_func.LAST_EXCEPTION is not None


def _take_host_exception() -> BaseException | None:
    """This thread's host exception; else wasmtime-py's global one, from a function not made by
    ``host_function`` (none of a worker's)."""
    exc: BaseException | None = getattr(_pending, "exception", None)
    _pending.exception = None
    kept, wasmtime_func.LAST_EXCEPTION = wasmtime_func.LAST_EXCEPTION, None
    if exc is None and kept is not None and kept not in _kept_per_thread:
        return kept
    return exc


def _raise_host_exception() -> None:
    """What wasmtime-py's ``maybe_raise_last_exn`` does, from this thread's own record."""
    exc = _take_host_exception()
    if exc is not None:
        try:
            raise exc
        finally:
            # This frame, in the exception's traceback, would hold the exception: a cycle that only the
            # garbage collector frees, and aos's Lua makes one a message with its longjmp.
            del exc


wasmtime_func.maybe_raise_last_exn = _raise_host_exception  # its public call path (Func.__call__) too


def _raise_pending_host_error() -> None:
    """An exception raised in a host function reaches wasmtime-py as a trap, with the exception kept
    aside; the public call path re-raises it, so this raw path must too. Ours are raised as they are;
    a fuel trap from a nested call becomes ComputeLimitExceeded."""
    exc = _take_host_exception()
    if exc is None:
        return
    if isinstance(exc, (ActoraoError, HostResourceError, MemoryError, OSError)) or not isinstance(exc, Exception):
        raise exc  # ours, or the host's trouble (SystemExit, out of memory, disk): never a module result
    if isinstance(exc, wasmtime.Trap) and exc.trap_code == _OUT_OF_FUEL:
        raise ComputeLimitExceeded("ComputeLimitExceeded: the message ran out of fuel") from exc
    raise Trap(f"Trap: a host function failed: {type(exc).__name__}: {_last_line(str(exc))}") from exc
