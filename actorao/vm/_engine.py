"""The one wasmtime configuration every evaluation runs under: deterministic and fuel-metered."""

from __future__ import annotations

import functools

import wasmtime


@functools.cache
def engine() -> wasmtime.Engine:
    """The process-wide engine. Fuel meters every call; NaNs are canonical, so float results are the
    same bits on every machine; threads and relaxed SIMD, whose results may differ, are off."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.cranelift_nan_canonicalization = True
    config.wasm_threads = False
    config.wasm_relaxed_simd = False
    config.wasm_memory64 = True
    config.parallel_compilation = False
    # A worker hosts thousands of instances. The default reserves 4 GiB of address space (plus guard)
    # for each memory, which runs out near 20,000 instances; 64 MiB reservations run out past a
    # million, and bigger memories simply move when they grow. The bench showed no cost per call.
    config.memory_reservation = MEMORY_RESERVATION
    config.memory_guard_size = 2 << 20
    return wasmtime.Engine(config)


MEMORY_RESERVATION = 64 << 20
