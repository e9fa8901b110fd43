"""Emscripten modules: aos, ao's Lua process, as built by ao's dev-cli.

``wasm64-unknown-emscripten-draft_2024_02_15`` (i64 pointers) and ``wasm32-unknown-emscripten4``, plus
the older ``wasm32-unknown-emscripten{,2,3}`` names. The module imports its libc's system layer from
``env`` and ``wasi_snapshot_preview1``; this host serves what aos uses, deterministically:

- Strings for ``handle`` go on the module's own stack, and the stack is restored after the call.
- ``invoke_*`` calls through the function table and turns ``_emscripten_throw_longjmp`` into
  ``setThrew(1, 0)``: Lua's ``error`` is a longjmp.
- Heap growth follows emscripten's policy, under the process's Memory-Limit; a refusal is noted, so
  a failed message that ran into it is reported as MemoryLimitExceeded.
- Time: ``emscripten_date_now`` is the message's Timestamp, and the time zone is UTC. Never the
  wall clock.
- There is no file system, no environment and no shell: opening a file fails with ENOENT, stdin is
  empty, stdout and stderr are kept only for the log.
- WeaveDrive's open/read/close serve what the evaluator's drive (``host.files.drive``) gives; its
  descriptors are WASI's too, for fd_read/fd_seek/fd_close. With no drive every file is absent,
  which aos handles (it is what ao's loader does without WeaveDrive too).

An import outside this list makes loading fail with an error that names it.
"""

from __future__ import annotations

import logging
import struct
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import wasmtime

from actorao._exceptions import ModuleError, Trap
from actorao.vm._weavedrive import OpenFiles
from actorao.vm.formats._base import check_exports, memory_export, type_names

if TYPE_CHECKING:
    from actorao.vm._instance import Instance

log = logging.getLogger(__name__)

WASM64 = "wasm64-unknown-emscripten-draft_2024_02_15"
WASM64_METERING = "wasm64-unknown-emscripten-draft_2024_10_16-metering"
WASM32 = ("wasm32-unknown-emscripten4", "wasm32-unknown-emscripten", "wasm32-unknown-emscripten2",
          "wasm32-unknown-emscripten3", "wasm32-unknown-emscripten-metering")

# errno values as emscripten's libc numbers them (WASI's)
EBADF, EINVAL, ENOENT, ENOMEM, ENOSYS, ENOTTY, ERANGE, ESPIPE = 8, 28, 44, 48, 52, 59, 68, 70
_HEAP_MAX = {"i32": 4294901760, "i64": 17179869184}
_STDIO = (0, 1, 2)
_LOG_LIMIT = 64 * 1024
_STACK_HEADROOM = 1 << 20  # stack left for handle itself once the message and env are on it


class LongJmp(Exception):
    """``_emscripten_throw_longjmp``: unwinds to the nearest ``invoke_*``."""


# ao's loader hands the module the environment of emscripten's glue; _ is the program's name, which
# emscripten's glue takes from the host's argv[1] under Node (the CU's own path): we serve its default.
_GLUE_ENVIRONMENT = (b"USER=web_user", b"LOGNAME=web_user", b"PATH=/", b"PWD=/", b"HOME=/home/web_user",
                     b"LANG=C.UTF-8", b"_=./this.program")
_ASYNCIFY_STACK = 41943040  # the bytes emscripten's Asyncify mallocs to unwind into, in ao's builds


@dataclass(frozen=True, slots=True)
class Flavour:
    """What ao's loader glue for one Module-Format does, where the module can see it.

    ``clock_start``: the glue replaces Date.now with a counter that starts at 10,000 ms and goes up by
    one on each read; its own start-up reads it ``clock_start - 10000`` times. None: time reads 0.
    ``string_room``: how many bytes ccall reserves on the stack for a string argument.
    """

    stack: tuple[str, str, str]  # the exports that read, restore and allocate the stack
    heap_max: int
    clock_start: int | None
    environment: tuple[bytes, ...]
    string_room: Callable[[bytes], int]
    main_argv: bool | None  # None: main is not run; False: main(0, 0); True: main(1, ["./this.program"])
    cookie: bool  # the glue writes emscripten's stack cookie before the constructors
    dyn_call: bool  # invoke_* calls through the module's dynCall_* exports, not the table
    minified: Mapping[str, str] | None = None  # import or export name -> the name it stands for


def _exact_room(text: bytes) -> int:
    return len(text) + 1


def _utf16_room(text: bytes) -> int:
    """(JS string length << 2) + 1, as older emscripten's ccall reserves: four bytes a UTF-16 unit."""
    return (len(text.decode("utf-8", "surrogatepass").encode("utf-16-le")) // 2 << 2) + 1


_MODERN = ("emscripten_stack_get_current", "_emscripten_stack_restore", "_emscripten_stack_alloc")
_OLD = ("stackSave", "stackRestore", "stackAlloc")
# The minified names of the original wasm32-unknown-emscripten build, as ao's loader's glue binds them.
_MINIFIED = {
    "w": "__syscall_dup3", "d": "__syscall_fcntl64", "z": "__syscall_ioctl", "r": "__syscall_lstat64",
    "g": "__syscall_openat", "s": "__syscall_renameat", "t": "__syscall_rmdir", "e": "__syscall_unlinkat",
    "a": "_emscripten_date_now", "A": "_emscripten_get_now_is_monotonic", "p": "_emscripten_throw_longjmp",
    "B": "_gmtime_js", "C": "_localtime_js", "i": "_mktime_js", "j": "_tzset_js", "D": "abort",
    "k": "emscripten_memcpy_big", "q": "emscripten_resize_heap", "u": "environ_get", "v": "environ_sizes_get",
    "l": "exit", "c": "fd_close", "y": "fd_read", "o": "fd_seek", "f": "fd_write", "h": "getTempRet0",
    "x": "invoke_vii", "b": "setTempRet0", "n": "strftime", "m": "system",
    # exports
    "E": "memory", "F": "__wasm_call_ctors", "G": "handle", "H": "main", "I": "__indirect_function_table",
    "J": "malloc", "K": "__errno_location", "L": "setThrew", "M": "stackSave", "N": "stackRestore",
    "O": "stackAlloc",
}
_EXPORTED_AS = {name: short for short, name in _MINIFIED.items() if short.isupper()}
_PROGRAM = b"./this.program"
_ASYNCIFY = ("asyncify_start_unwind", "asyncify_stop_unwind", "asyncify_start_rewind", "asyncify_stop_rewind")
_UTC_NAME = b"Coordinated Universal Time"
_LEGACY_HEAP_MAX = 524288000  # the older glues' getHeapMax(): ao's default memory limit, fixed


_JS_DATE_LIMIT = 8_640_000_000_000  # seconds either side of 1970 that a JS Date can hold


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date, for any year (integer arithmetic)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month 1-12, day 1-31) of a day count since 1970-01-01."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + 3 if shifted_month < 10 else shifted_month - 9
    return year_of_era + era * 400 + (month <= 2), month, day


def broken_down(seconds: int) -> tuple[int, int, int, int, int, int, int, int]:
    """struct tm's first eight fields (sec, min, hour, mday, mon 0-11, year-1900, wday, yday) of a
    UTC time; zeros outside what a JS Date can hold, as emscripten writes for NaN."""
    if abs(seconds) > _JS_DATE_LIMIT:
        return (0,) * 8  # type: ignore[return-value]
    days, second_of_day = divmod(seconds, 86400)
    year, month, day = civil_from_days(days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    yday = days - days_from_civil(year, 1, 1)
    return second, minute, hour, day, month - 1, year - 1900, (days + 4) % 7, yday


class EmscriptenHost:
    """The system layer of one emscripten instance."""

    def __init__(self, instance: Instance, pointer: str, flavour: Flavour) -> None:
        # A proxy: the instance holds its host, and a strong reference back would make a cycle that
        # keeps the instance's whole linear memory alive until the garbage collector runs.
        self.instance = cast("Instance", weakref.proxy(instance))
        self.flavour = flavour
        self.wide = pointer == "i64"
        self.width = 8 if self.wide else 4
        self.limit_hit = False
        self.gas_used = 0
        self.console = bytearray()
        self.saved_stack = 0
        self.clock = flavour.clock_start or 0
        self.temp_ret = 0
        self.tzset_done = 0
        self.export_names: Mapping[str, str] = (
            {"memory": _EXPORTED_AS["memory"], "handle": _EXPORTED_AS["handle"]} if flavour.minified else {}
        )
        self.async_data = 0  # the Asyncify buffer of a call unwound by an async import, until it rewinds
        self.async_value = 0
        self.files = OpenFiles()  # WeaveDrive's descriptors; the evaluator sets files.drive per message

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def store(self) -> wasmtime.Store:
        """The instance's. Never held here: wasmtime-py keeps every host function (bound to this host)
        until its store is dropped, so a host holding the store would keep both, and the instance's
        linear memory, for ever."""
        return self.instance.store

    def imports(self, store: wasmtime.Store, module: wasmtime.Module) -> list[wasmtime.Func]:
        funcs = []
        for imported in module.imports:
            assert isinstance(imported.type, wasmtime.FuncType) and imported.name is not None  # check()ed
            funcs.append(self.instance.host_func(imported.type, self._handler(self._plain(imported.name))))
        return funcs

    def _plain(self, name: str) -> str:
        return self.flavour.minified.get(name, name) if self.flavour.minified else name

    def _handler(self, name: str) -> Callable[..., Any]:
        if name.startswith("invoke_"):
            return self._invoke_through_table(name)
        method = _IMPORTS.get(name)
        assert method is not None, name  # check() refused anything else
        handler: Callable[..., Any] = getattr(self, method)
        return handler

    def start(self, exports: Mapping[str, Any]) -> None:
        flavour = self.flavour

        def func(name: str) -> wasmtime.Func:
            found = exports[_EXPORTED_AS.get(name, name) if flavour.minified else name]
            assert isinstance(found, wasmtime.Func)
            return found

        def optional(name: str) -> wasmtime.Func | None:
            found = exports.get(_EXPORTED_AS.get(name, name) if flavour.minified else name)
            return found if isinstance(found, wasmtime.Func) else None

        table = exports["I" if flavour.minified else "__indirect_function_table"]
        assert isinstance(table, wasmtime.Table)
        self.table = table
        current, restore, alloc = flavour.stack
        # What the invoke_* trampolines call, a dozen times a message, on the fast path (the same
        # values and exceptions as wasmtime-py's calls, without their conversions).
        fast = self.instance.fast_func
        self.stack_current = fast(func(current))
        self.stack_restore = fast(func(restore))
        self.set_threw = fast(func("setThrew"))
        self.tempret_set = optional("_emscripten_tempret_set") if not self.wide else None
        self.stack_alloc = self.instance.raw_func(func(alloc))
        self.stack_current_raw = self.instance.raw_func(func(current))
        self.stack_restore_raw = self.instance.raw_func(func(restore))
        self.asyncify = [optional(name) for name in _ASYNCIFY]
        self.malloc, self.free, self.fflush = optional("malloc"), optional("free"), optional("fflush")
        self.dyn_calls = {
            name: fast(found)
            for name, found in exports.items()
            if flavour.dyn_call and name.startswith("dynCall_") and isinstance(found, wasmtime.Func)
        }
        stack_init, stack_end = optional("emscripten_stack_init"), optional("emscripten_stack_get_end")
        if stack_init is not None:
            stack_init(self.store)
        self.stack_end = int(stack_end(self.store)) if stack_end is not None else 0
        if flavour.cookie:
            self._write_stack_cookie()
        func("__wasm_call_ctors")(self.store)
        if flavour.main_argv is not None:
            self._run_main(func("main"), flavour.main_argv)

    def _run_main(self, main: wasmtime.Func, with_argv: bool) -> None:
        """As the older glues' callMain does at start-up; the stack it takes is not given back."""
        if not with_argv:
            main(self.store, 0, 0)
            return
        invoke = self.instance.invoke
        argv = invoke(self.stack_alloc, 8)
        name = invoke(self.stack_alloc, len(_PROGRAM) + 1)
        self.instance.write(name, _PROGRAM + b"\0")
        self.instance.write(argv, struct.pack("<II", name, 0))
        main(self.store, 1, argv)
        if self.fflush is not None:
            self.fflush(self.store, 0)  # exit() looks for unflushed output by flushing every stream

    def _write_stack_cookie(self) -> None:
        """As emscripten's glue does before the constructors run: two words at the stack's end, and
        'emsc' at address 0, which it checks later. They are part of memory, so ours has them too."""
        self.instance.write(self.stack_end, struct.pack("<II", 0x02135467, 0x89BACDFE))
        self.instance.write(0, struct.pack("<I", 0x63736D65))

    def begin(self, message: bytes) -> None:
        self.limit_hit = False
        self.console.clear()

    def place(self, message: bytes, env: bytes) -> tuple[int, int]:
        """As emscripten's ccall does: both strings on the stack, restored after the call."""
        invoke = self.instance.invoke
        self.saved_stack = invoke(self.stack_current_raw)
        room = self.flavour.string_room
        free = self.saved_stack - self.stack_end
        kept = min(_STACK_HEADROOM, free // 2)  # a small stack (SQLite's build has 64 KiB) keeps half
        if room(message) + room(env) + kept > free:
            raise Trap(
                f"Trap: the message ({len(message)} bytes) does not fit on the module's stack "
                f"({free} bytes free, {kept} kept for the call)"
            )
        pointers = (invoke(self.stack_alloc, room(message)), invoke(self.stack_alloc, room(env)))
        self.instance.write_strings(pointers, (message, env))
        return pointers

    def rewinding(self) -> bool:
        """Whether the call just returned because an async import unwound it; if so, the rewind has
        begun and the caller calls ``handle`` again, as emscripten's Asyncify does once the import's
        promise settles."""
        if not self.async_data:
            return False
        _, stop_unwind, start_rewind, _ = self.asyncify
        assert stop_unwind is not None and start_rewind is not None
        stop_unwind(self.store)
        start_rewind(self.store, self.async_data)
        return True

    def sleep(self, value: int) -> int:
        """An async import (WeaveDrive's) as ao's loader runs it under Asyncify, which the module can
        see in its memory: the first entry mallocs the unwind buffer and unwinds; the re-entry on
        rewind frees it and returns ``value``."""
        start_unwind, _, _, stop_rewind = self.asyncify
        if start_unwind is None or stop_rewind is None or self.malloc is None or self.free is None:
            return value  # a build without Asyncify: the import answers at once
        if self.async_data:
            stop_rewind(self.store)
            self.free(self.store, self.async_data)
            self.async_data = 0
            return value
        header = 24 if self.wide else 12
        data = int(self.malloc(self.store, header + _ASYNCIFY_STACK))
        if data == 0:
            raise Trap("Trap: out of memory for the Asyncify buffer of an async import")
        form = "<QQi" if self.wide else "<IIi"
        # stack start, stack end, and the id of the export to rewind into: handle, the first and only
        self.instance.write(data, struct.pack(form, data + header, data + header + _ASYNCIFY_STACK, 0))
        self.async_data = data
        start_unwind(self.store, data)
        return 0

    def end(self) -> None:
        self.async_data = 0
        if self.saved_stack:
            self.instance.invoke(self.stack_restore_raw, self.saved_stack)
            self.saved_stack = 0
        if self.console and log.isEnabledFor(logging.DEBUG):
            log.debug("module console: %s", bytes(self.console[:_LOG_LIMIT]).decode(errors="replace"))

    # -- memory helpers -------------------------------------------------------------------------
    def _int(self, pointer: int, width: int) -> int:
        return int.from_bytes(self.instance.read(pointer, width), "little")

    def _put_int(self, pointer: int, value: int, width: int) -> None:
        self.instance.write(pointer, (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little"))

    # -- setjmp/longjmp -------------------------------------------------------------------------
    def _invoke_through_table(self, name: str) -> Callable[..., Any]:
        returns = name[len("invoke_")] != "v"
        dyn_call = "dynCall_" + name[len("invoke_"):]

        def invoke(index: int, *args: Any) -> Any:
            store = self.store
            stack = self.stack_current(store)
            try:
                # Through the module's own dynCall_* where it has one, as ao's glue calls: under
                # Asyncify its frame is saved in memory when a call unwinds, so it must be there.
                through = self.dyn_calls.get(dyn_call)
                if through is not None:
                    return through(store, index, *args)
                function = self.table.get(store, int(index))
                if not isinstance(function, wasmtime.Func):
                    raise Trap(f"Trap: {name} called table slot {index}, which holds no function")
                return function(store, *args)
            except LongJmp:
                self.stack_restore(store, stack)
                self.set_threw(store, 1, 0)
                return 0 if returns else None
            except BaseException as failure:
                try:
                    self.stack_restore(store, stack)
                except BaseException:  # out of fuel, say: what was raised first is what matters
                    pass
                raise failure

        return invoke

    def throw_longjmp(self) -> None:
        raise LongJmp

    # -- heap -----------------------------------------------------------------------------------
    def resize_heap(self, requested: int) -> int:
        """emscripten's growth policy: overgrow by 20 % (capped at 96 MiB past the request), then by
        less, aligned to 64 KiB, never past the heap maximum or the process's Memory-Limit."""
        instance = self.instance
        current = instance.memory_size()
        requested &= (1 << 64) - 1
        heap_max = self.flavour.heap_max
        ceiling = min(heap_max, instance.effective_memory_limit())
        if requested > ceiling:
            self.limit_hit = requested <= heap_max
            return 0
        for cut_down in (1, 2, 4):
            over = min(current * (1 + 0.2 / cut_down), requested + 100663296)
            target = min(ceiling, -(-int(max(requested, over)) // 65536) * 65536)
            try:
                instance.memory.grow(self.store, -(-(target - current) // 65536))
                self.limit_hit = False  # it grew: whatever failed before, the process carried on
                return 1
            except wasmtime.WasmtimeError:
                continue
        self.limit_hit = True
        return 0

    def memcpy(self, destination: int, source: int, length: int) -> None:
        self.instance.copy(destination, source, length)

    # -- time: the message's, in UTC ------------------------------------------------------------
    def date_now(self) -> float:
        """Milliseconds since the epoch: the message's Timestamp, never the wall clock."""
        if self.flavour.clock_start is None:
            return 0.0
        self.clock += 1
        return float(self.clock - 1)

    def tick(self) -> None:
        """Reads of ao's glue clock that the module does not see, but that move it: a write to a
        terminal stamps its node with Date.now()."""
        if self.flavour.clock_start is not None:
            self.clock += 1

    def host_state(self) -> tuple[tuple[str, int], ...]:
        if self.flavour.clock_start is not None:
            return (("clock", self.clock), *self.files.state())  # the clock first: see set_host_state
        return (("tzset", self.tzset_done),) if self.flavour.main_argv is not None else ()

    def set_host_state(self, name: str, value: int) -> None:
        if name == "clock":
            self.clock = int(value)
            self.files.clear()  # a snapshot's files follow its clock: none but those are open after it
        elif self.files.set_state(name, value):
            pass
        elif name == "tzset":
            self.tzset_done = int(value)
        else:
            raise KeyError(name)

    def now_is_monotonic(self) -> int:
        return 1

    def _time_arg(self, args: tuple[int, ...]) -> tuple[int, int]:
        """(seconds, tm pointer) from (time, tm) on wasm64, (low, high, tm) on wasm32, or (&time, tm)
        on the older wasm32 glues."""
        if len(args) == 3:
            low, high, tm = args
            return (low & 0xFFFFFFFF) + high * (1 << 32), tm
        if not self.wide:  # the older glues: a pointer to a 32-bit time_t
            return struct.unpack("<i", self.instance.read(args[0], 4))[0], args[1]
        return args[0], args[1]

    def _write_tm(self, tm: int, seconds: int, with_zone: bool) -> None:
        self.instance.write(tm, struct.pack("<8i", *broken_down(seconds)))
        if with_zone:
            self.instance.write(tm + 32, struct.pack("<i", 0))  # tm_isdst
            self._put_int(tm + (40 if self.wide else 36), 0, self.width)  # tm_gmtoff: UTC

    def gmtime(self, *args: int) -> None:
        seconds, tm = self._time_arg(args)
        self._write_tm(tm, seconds, with_zone=False)

    def localtime(self, *args: int) -> None:
        seconds, tm = self._time_arg(args)
        self._write_tm(tm, seconds, with_zone=True)

    def mktime(self, tm: int) -> int:
        sec, minute, hour, mday, mon, year = struct.unpack("<6i", self.instance.read(tm, 24))
        months = year * 12 + mon  # normalises any month, as mktime must
        days = days_from_civil(1900 + months // 12, months % 12 + 1, 1) + mday - 1
        seconds = int(days * 86400 + hour * 3600 + minute * 60 + sec)
        self._write_tm(tm, seconds, with_zone=False)
        if self.wide:
            return seconds
        if self.tempret_set is not None:
            assert isinstance(self.tempret_set, wasmtime.Func)
            self.tempret_set(self.store, (seconds >> 32) & 0xFFFFFFFF)
        return seconds & 0xFFFFFFFF

    def tzset(self, timezone: int, daylight: int, std_name: int, dst_name: int | None = None) -> None:
        if dst_name is None:
            self._tzset_once(timezone, daylight, std_name)
            return
        self._put_int(timezone, 0, self.width)
        self._put_int(daylight, 0, 4)
        self.instance.write(std_name, b"UTC\0")
        self.instance.write(dst_name, b"UTC\0")

    def _tzset_once(self, timezone: int, daylight: int, names: int) -> None:
        """The older glues' tzset(timezone, daylight, tzname): once per instance, the zone's names
        malloc'd, as JS names UTC ("Coordinated Universal Time"; the CU runs in UTC)."""
        if self.tzset_done or self.malloc is None:
            return
        self.tzset_done = 1
        self._put_int(timezone, 0, 4)
        self._put_int(daylight, 0, 4)
        pointers = []
        for _ in range(2):
            pointer = int(self.malloc(self.store, len(_UTC_NAME) + 1))
            self.instance.write(pointer, _UTC_NAME + b"\0")
            pointers.append(pointer)
        self.instance.write(names, struct.pack("<II", pointers[1], pointers[0]))  # equal offsets: summer first

    def strftime(self, out: int, size: int, fmt: int, tm: int) -> int:
        """C-locale strftime of a struct tm; returns the length written, or 0 if it does not fit."""
        sec, minute, hour, mday, mon, year, wday, yday = struct.unpack("<8i", self.instance.read(tm, 32))
        zone_at = self._int(tm + (48 if self.wide else 40), self.width)  # tm_zone: gmtime's "GMT", ...
        zone = self.instance.read_string(zone_at).decode(errors="replace") if zone_at else "GMT"
        text = _strftime(self.instance.read_string(fmt).decode(errors="replace"),
                         sec, minute, hour, mday, mon, year + 1900, wday, yday, zone).encode()
        if len(text) + 1 > size:
            return 0
        self.instance.write(out, text + b"\0")
        return len(text)

    # -- the absent system: no files, no environment, no shell -----------------------------------
    def fd_write(self, fd: int, iovs: int, count: int, written: int) -> int:
        if fd not in (1, 2):
            return EBADF
        total = 0
        step = 2 * self.width
        for at in range(count):
            pointer = self._int(iovs + at * step, self.width)
            length = self._int(iovs + at * step + self.width, self.width)
            if len(self.console) < _LOG_LIMIT:
                self.console += self.instance.read(pointer, length)
            if length:
                self.tick()
            total += length
        self._put_int(written, total, self.width)
        return 0

    def fd_read(self, fd: int, iovs: int, count: int, read: int) -> int:
        if fd in self.files:
            total = 0
            step = 2 * self.width
            for at in range(count):
                pointer = self._int(iovs + at * step, self.width)
                length = self._int(iovs + at * step + self.width, self.width)
                data = self.files.read(fd, length)
                self.instance.write(pointer, data)
                total += len(data)
                if len(data) < length:
                    break
            self._put_int(read, total, self.width)
            return 0
        if fd != 0:
            return EBADF
        self._put_int(read, 0, self.width)  # stdin is empty
        return 0

    def fd_close(self, fd: int) -> int:
        return 0 if fd in _STDIO or self.files.close(fd) else EBADF

    def fd_seek(self, fd: int, *args: int) -> int:
        """(offset, whence, &new) on wasm64; (low, high, whence, &new) on wasm32."""
        if fd not in self.files:
            return ESPIPE if fd in _STDIO else EBADF
        if len(args) == 4:
            low, high, whence, new_at = args
            offset = (low & 0xFFFFFFFF) + (high << 32)
        else:
            offset, whence, new_at = args
        position = self.files.seek(fd, offset, whence)
        if position is None:
            return EINVAL
        self._put_int(new_at, position, 8)
        return 0

    def environ_sizes_get(self, count: int, size: int) -> int:
        strings = self.flavour.environment
        self._put_int(count, len(strings), self.width)
        self._put_int(size, sum(len(text) + 1 for text in strings), self.width)
        return 0

    def environ_get(self, environ: int, buffer: int) -> int:
        for at, text in enumerate(self.flavour.environment):
            self._put_int(environ + at * self.width, buffer, self.width)
            self.instance.write(buffer, text + b"\0")
            buffer += len(text) + 1
        return 0

    def no_such_file(self, *args: int) -> int:
        return -ENOENT

    def bad_descriptor(self, *args: int) -> int:
        return -EBADF

    def fcntl(self, fd: int, command: int, varargs: int) -> int:
        return 0 if fd in _STDIO else -EBADF

    def ioctl(self, fd: int, operation: int, varargs: int) -> int:
        return -ENOTTY if fd in _STDIO else -EBADF

    def system(self, command: int) -> int:
        return 0 if command == 0 else -ENOSYS  # 0 for "is there a shell?": there is none

    def exit(self, code: int) -> None:
        raise Trap(f"Trap: the module called exit({code})")

    def abort(self) -> None:
        raise Trap("Trap: the module aborted (native code called abort())")

    def _async(self, answer: Callable[[], int]) -> int:
        """An async import: answered on its first entry; its re-entry on the rewind (the module runs
        up to the same call again) gives the same answer without doing the work twice."""
        if self.async_data:
            return self.sleep(self.async_value)
        self.async_value = answer()
        return self.sleep(self.async_value)

    def weavedrive_open(self, path: int, mode: int) -> int:
        """A descriptor for a WeaveDrive path; 0 where it is absent (or the process has no drive)."""
        return self._async(lambda: self.files.open(self.instance.read_string(path).decode(errors="replace")))

    def gas_used_now(self) -> int:
        return 0  # ao's loader meters only the -metering formats, and refills before every call

    def get_temp_ret(self) -> int:
        return self.temp_ret

    def set_temp_ret(self, value: int) -> None:
        self.temp_ret = value

    def get_now(self) -> float:
        return self.date_now()

    def ignore(self, *args: int) -> None:
        pass

    def strftime_l(self, out: int, size: int, fmt: int, tm: int, locale: int) -> int:
        return self.strftime(out, size, fmt, tm)

    def heap_max(self) -> int:
        return self.flavour.heap_max

    def get_cwd(self, buffer: int, size: int) -> int:
        if size < 2:
            return -ERANGE
        self.instance.write(buffer, b"/\0")
        return 2

    def no_memory_map(self, *args: int) -> int:
        return -ENOMEM

    def unmapped(self, *args: int) -> int:
        return 0

    def no_dynamic_linking(self, *args: int) -> int:
        raise Trap("Trap: the module called dlopen; dynamic linking is not served (nor by ao's loader)")

    def fd_sync(self, fd: int) -> int:
        return 0 if fd in _STDIO else EBADF

    def fd_fdstat_get(self, fd: int, stat: int) -> int:
        if fd not in _STDIO:
            return EBADF
        # filetype character device, no flags, rights all set: as emscripten describes a terminal
        self.instance.write(stat, struct.pack("<BxHxxxxQQ", 2, 0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF))
        return 0

    def assert_fail(self, condition: int, file: int, line: int, function: int) -> None:
        text = self.instance.read_string(condition).decode(errors="replace") if condition else "?"
        raise Trap(f"Trap: the module's assertion failed: {text}")

    def cxa_throw(self, *args: int) -> None:
        raise Trap("Trap: the module threw a C++ exception, which this build cannot catch")

    def console_error(self, text: int) -> None:
        if len(self.console) < _LOG_LIMIT:
            self.console += self.instance.read_string(text) + b"\n"

    def weavedrive_read(self, fd: int, buffer: int, size: int) -> int:
        def answer() -> int:
            if fd not in self.files:
                return -1
            data = self.files.read(fd, size)
            self.instance.write(buffer, data)
            return len(data)

        return self._async(answer)

    def weavedrive_close(self, fd: int) -> int:
        def answer() -> int:
            self.files.close(fd)
            return 0  # ao's loader's close answers nothing, which the module reads as 0

        return self._async(answer)  # an EM_ASYNC_JS import unwinds even when its answer is at hand

    def use_gas(self, gas: int) -> None:
        self.gas_used += gas  # wasmtime fuel enforces Compute-Limit; this only counts


_IMPORTS = {
    "_emscripten_throw_longjmp": "throw_longjmp",
    "emscripten_resize_heap": "resize_heap",
    "_emscripten_memcpy_js": "memcpy",
    "emscripten_memcpy_big": "memcpy",
    "emscripten_date_now": "date_now",
    "metering_gasUsed": "gas_used_now",
    "_emscripten_get_now_is_monotonic": "now_is_monotonic",
    "_gmtime_js": "gmtime",
    "_localtime_js": "localtime",
    "_mktime_js": "mktime",
    "_tzset_js": "tzset",
    "strftime": "strftime",
    "fd_write": "fd_write",
    "fd_read": "fd_read",
    "fd_close": "fd_close",
    "fd_seek": "fd_seek",
    "environ_sizes_get": "environ_sizes_get",
    "environ_get": "environ_get",
    "__syscall_openat": "no_such_file",
    "__syscall_unlinkat": "no_such_file",
    "__syscall_rmdir": "no_such_file",
    "__syscall_renameat": "no_such_file",
    "__syscall_readlinkat": "no_such_file",
    "__syscall_dup3": "bad_descriptor",
    "__syscall_fcntl64": "fcntl",
    "__syscall_ioctl": "ioctl",
    "_emscripten_system": "system",
    "exit": "exit",
    "_abort_js": "abort",
    "__asyncjs__weavedrive_open": "weavedrive_open",
    "__asyncjs__weavedrive_read": "weavedrive_read",
    "__asyncjs__weavedrive_close": "weavedrive_close",
    "usegas": "use_gas",
    # emscripten2 and the original build
    "abort": "abort",
    "getTempRet0": "get_temp_ret",
    "setTempRet0": "set_temp_ret",
    "system": "system",
    "_emscripten_date_now": "date_now",
    "emscripten_get_now": "get_now",
    "__syscall_lstat64": "no_such_file",
    # the SQLite builds: a file system that holds no file, no mmap, no dlopen
    "__syscall_faccessat": "no_such_file",
    "__syscall_stat64": "no_such_file",
    "__syscall_newfstatat": "no_such_file",
    "__syscall_chmod": "no_such_file",
    "__syscall_mkdirat": "no_such_file",
    "__syscall_utimensat": "no_such_file",
    "__syscall_fchmod": "bad_descriptor",
    "__syscall_fchown32": "bad_descriptor",
    "__syscall_fstat64": "bad_descriptor",
    "__syscall_ftruncate64": "bad_descriptor",
    "__syscall_getcwd": "get_cwd",
    "_mmap_js": "no_memory_map",
    "_munmap_js": "unmapped",
    "_dlopen_js": "no_dynamic_linking",
    "_dlsym_js": "no_dynamic_linking",
    "_dlinit": "ignore",
    "strftime_l": "strftime_l",
    "emscripten_get_heap_max": "heap_max",
    "fd_sync": "fd_sync",
    "fd_fdstat_get": "fd_fdstat_get",
    "__assert_fail": "assert_fail",
    "__cxa_throw": "cxa_throw",
    "emscripten_err": "console_error",
}
_MODULES = ("env", "wasi_snapshot_preview1", "metering")

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")


def _iso_week(year: int, yday: int, wday: int) -> tuple[int, int]:
    """(ISO year, ISO week) of a day given by its year, 0-based day of year and weekday (Sunday 0)."""

    def weeks_in(year_: int) -> int:
        jan1 = (days_from_civil(year_, 1, 1) + 4) % 7
        leap = year_ % 4 == 0 and (year_ % 100 != 0 or year_ % 400 == 0)
        return 53 if jan1 == 4 or (leap and jan1 == 3) else 52

    week = (yday + 1 - (wday or 7) + 10) // 7
    if week < 1:
        return year - 1, weeks_in(year - 1)
    if week > weeks_in(year):
        return year + 1, 1
    return year, week


def _strftime(fmt: str, sec: int, minute: int, hour: int, mday: int, mon: int, year: int, wday: int,
              yday: int, zone: str) -> str:
    """strftime in the C locale, written out so no host locale or zone can leak in."""
    hour12 = hour % 12 or 12
    iso_year, iso_week = _iso_week(year, yday, wday % 7)
    fields = {
        "a": _DAYS[wday % 7][:3], "A": _DAYS[wday % 7], "b": _MONTHS[mon % 12][:3], "h": _MONTHS[mon % 12][:3],
        "B": _MONTHS[mon % 12], "d": f"{mday:02d}", "e": f"{mday:2d}", "H": f"{hour:02d}", "I": f"{hour12:02d}",
        "j": f"{yday + 1:03d}", "m": f"{mon + 1:02d}", "M": f"{minute:02d}", "p": "AM" if hour < 12 else "PM",
        "S": f"{sec:02d}", "y": f"{year % 100:02d}", "Y": str(year), "C": f"{year // 100:02d}",
        "w": str(wday % 7), "u": str(wday % 7 or 7), "Z": zone, "z": "+0000", "n": "\n", "t": "\t", "%": "%",
        "U": f"{(yday + 7 - wday % 7) // 7:02d}", "W": f"{(yday + 7 - (wday + 6) % 7) // 7:02d}",
        "V": f"{iso_week:02d}", "G": str(iso_year), "g": f"{iso_year % 100:02d}",
    }
    fields["D"] = f"{fields['m']}/{fields['d']}/{fields['y']}"
    fields["F"] = f"{year}-{fields['m']}-{fields['d']}"
    fields["T"] = f"{fields['H']}:{fields['M']}:{fields['S']}"
    fields["R"] = f"{fields['H']}:{fields['M']}"
    fields["r"] = f"{fields['I']}:{fields['M']}:{fields['S']} {fields['p']}"
    fields["c"] = f"{fields['a']} {fields['b']} {fields['d']} {fields['T']} {year}"
    fields["x"], fields["X"] = fields["D"], fields["T"]
    out = []
    at = 0
    while at < len(fmt):
        char = fmt[at]
        if char == "%" and at + 1 < len(fmt):
            spec = fmt[at + 1]
            if spec in "EO" and at + 2 < len(fmt):  # locale modifiers: the C locale ignores them
                at += 1
                spec = fmt[at + 1]
            out.append(fields.get(spec, "%" + spec))
            at += 2
        else:
            out.append(char)
            at += 1
    return "".join(out)


_CURRENT = dict(stack=_MODERN, clock_start=10004, environment=(), string_room=_exact_room, main_argv=None,
                cookie=True, dyn_call=True)
FLAVOURS: dict[str, Flavour] = {
    WASM64: Flavour(heap_max=_HEAP_MAX["i64"], **_CURRENT),  # type: ignore[arg-type]
    WASM64_METERING: Flavour(heap_max=_HEAP_MAX["i64"], **_CURRENT),  # type: ignore[arg-type]
    "wasm32-unknown-emscripten4": Flavour(heap_max=_HEAP_MAX["i32"], **_CURRENT),  # type: ignore[arg-type]
    "wasm32-unknown-emscripten-metering": Flavour(heap_max=_HEAP_MAX["i32"], **_CURRENT),  # type: ignore[arg-type]
    # emscripten3's glue keeps the environment and has no module of ao's to test it with
    "wasm32-unknown-emscripten3": Flavour(_MODERN, _HEAP_MAX["i32"], None, _GLUE_ENVIRONMENT, _exact_room, None, True,
                                          True),
    "wasm32-unknown-emscripten2": Flavour(_OLD, _LEGACY_HEAP_MAX, None, _GLUE_ENVIRONMENT, _utf16_room, True, True,
                                          False),
    "wasm32-unknown-emscripten": Flavour(_OLD, _LEGACY_HEAP_MAX, None, _GLUE_ENVIRONMENT, _utf16_room, False, False,
                                         False, _MINIFIED),
}


class EmscriptenFormat:
    names: tuple[str, ...] = (WASM64, *WASM32, WASM64_METERING)

    def detect(self, module: wasmtime.Module) -> str | None:
        names = {imported.name for imported in module.imports}
        if {imported.module for imported in module.imports} == {"a", "metering"} or _EXPORTED_AS["memory"] in {
            export.name for export in module.exports if isinstance(export.type, wasmtime.MemoryType)
        }:
            return "wasm32-unknown-emscripten"
        if not names & _IMPORTS.keys():  # nothing emscripten's system layer provides
            return None
        if memory_export(module).is_64:
            return WASM64
        return "wasm32-unknown-emscripten2" if "getTempRet0" in names else WASM32[0]

    def check(self, module: wasmtime.Module, name: str) -> str:
        flavour = FLAVOURS[name]
        minified = flavour.minified or {}
        exported = {export.name: export.type for export in module.exports}
        memory = exported.get(_EXPORTED_AS["memory"] if minified else "memory")
        if not isinstance(memory, wasmtime.MemoryType):
            memory = memory_export(module)  # raises, naming the memory it wants
        pointer = "i64" if memory.is_64 else "i32"
        if (pointer == "i64") != name.startswith("wasm64"):
            raise ModuleError(f"module: its memory is {'64' if pointer == 'i64' else '32'}-bit, not {name}")
        for imported in module.imports:
            name_ = minified.get(imported.name or "", imported.name or "")
            served = (imported.module in _MODULES or (minified and imported.module == "a")) and (
                name_ in _IMPORTS or name_.startswith("invoke_")
            )
            if not served or not isinstance(imported.type, wasmtime.FuncType):
                raise ModuleError(
                    f"module: imports {imported.module}.{imported.name}, which this node's {name} host "
                    "does not serve"
                )
        ptr = [pointer]
        current, restore, alloc = flavour.stack
        needed = {
            "handle": (ptr * 2, ptr),
            current: ([], ptr),
            restore: (ptr, []),
            alloc: (ptr, ptr),
            "__wasm_call_ctors": ([], []),
        }
        if minified:
            needed = {_EXPORTED_AS[export]: types for export, types in needed.items()}
        check_exports(module, needed, name)
        table = exported.get(_EXPORTED_AS["__indirect_function_table"] if minified else "__indirect_function_table")
        if not isinstance(table, wasmtime.TableType):
            raise ModuleError(f"module: does not export __indirect_function_table, which {name} needs")
        set_threw = exported.get(_EXPORTED_AS["setThrew"] if minified else "setThrew")
        if not isinstance(set_threw, wasmtime.FuncType) or len(type_names(set_threw.params)) != 2:
            raise ModuleError(f"module: does not export setThrew(threw, value), which {name} needs")
        return pointer

    def host(self, instance: Instance) -> EmscriptenHost:
        return EmscriptenHost(instance, "i64" if instance._wide else "i32", FLAVOURS[instance.format])
