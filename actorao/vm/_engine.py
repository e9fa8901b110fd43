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
    return wasmtime.Engine(config)
