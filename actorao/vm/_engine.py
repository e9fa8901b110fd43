"""The one wasmtime configuration every evaluation runs under: deterministic and fuel-metered."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import threading

import wasmtime

MEMORY_RESERVATION = 64 << 20
_SETTINGS = {
    "consume_fuel": True,
    # NaNs are the machine's, as V8 leaves them (it never canonicalises): on x86-64, 0/0 is the negative
    # quiet NaN, which aos prints as "-nan" and stores in its memory, as ao's loader does. Canonical NaNs
    # (positive) made such a message differ from ao's loader in its output and its memory. A machine's
    # NaNs are as deterministic as the rest of its arithmetic, and compiled code is keyed by the machine.
    "cranelift_nan_canonicalization": False,
    "wasm_threads": False,
    "wasm_relaxed_simd": False,
    "wasm_memory64": True,
    "memory_reservation": MEMORY_RESERVATION,
    "memory_guard_size": 2 << 20,
    # Linear memory is plain anonymous memory, never a copy-on-write map of the module's data: a
    # restore drops its pages (they read as zeros) and writes back only the snapshot's non-zero ones.
    "memory_init_cow": False,
}
# Cranelift's Spectre guards on linear-memory and table accesses: a select after every bounds check, so
# that a mispredicted check cannot read past the sandbox even speculatively. aos's wasm64 build checks
# every access, and the guards cost it 4-11 % a message (interleaved A/B on aos 2.0.6, Eval and handler).
# They change no result, only what a module could leak through the cache, and a worker holds nothing
# secret: no keys (the node and the shards sign), and other processes' memory follows from public logs.
# V8, which ao's loader runs on, does not guard wasm memory either.
_CRANELIFT_FLAGS = {
    "enable_heap_access_spectre_mitigation": "false",
    "enable_table_access_spectre_mitigation": "false",
}
_COMPILE_VERSION = 1  # bump when actorao changes what it compiles (vm/_binary.py's rewrite, say)
# Names the exact machine code this engine makes: compiled artifacts are keyed by it.
ENGINE_FINGERPRINT = hashlib.sha256(
    f"{importlib.metadata.version('wasmtime')}|{platform.machine()}|{sorted(_SETTINGS.items())}|"
    f"{sorted(_CRANELIFT_FLAGS.items())}|"
    f"{_COMPILE_VERSION}".encode()
).hexdigest()[:16]


_engine: list[wasmtime.Engine] = []
_engine_lock = threading.Lock()  # one engine, also when a worker's threads first ask at once


def engine() -> wasmtime.Engine:
    """The process-wide engine. Fuel meters every call; NaNs are the machine's own, as under V8 (see
    _SETTINGS); threads and relaxed SIMD, whose results may differ from run to run or between machines, are off."""
    if not _engine:
        with _engine_lock:
            if not _engine:
                _engine.append(_new_engine())
    return _engine[0]


def _new_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    # A worker hosts thousands of instances. The default reserves 4 GiB of address space (plus guard)
    # for each memory, which runs out near 20,000 instances; 64 MiB reservations run out past a
    # million, and bigger memories simply move when they grow. The bench showed no cost per call.
    for name, value in _SETTINGS.items():
        setattr(config, name, value)
    for flag, setting in _CRANELIFT_FLAGS.items():
        config.cranelift_flag_set(flag, setting)
    config.parallel_compilation = False
    return wasmtime.Engine(config)
