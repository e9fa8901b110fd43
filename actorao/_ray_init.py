"""Joining Ray from a process that runs wasmtime, without losing wasmtime's traps.

wasmtime turns a wasm trap (``unreachable``, a bad memory access) into a Trap by catching SIGILL,
SIGSEGV, SIGFPE and SIGBUS in handlers it installs when a process first uses it. ``ray.init`` puts
two handlers of its own over them: Abseil's failure signal handler (which prints "*** SIGILL
received" and ends the process) and Python's ``faulthandler``. After that, the first trapping message
evaluated in this process kills it. So Ray's failure handler is turned off with the variable Ray reads
for that (``RAY_DISABLE_FAILURE_SIGNAL_HANDLER``; and its constant, if Ray was imported before the
variable was set), and ``faulthandler``, unless it was on before, is turned off again, which puts
back the handlers it found. Ray's own worker processes need none of this:
a CU worker there starts wasmtime after Ray, so wasmtime's handlers are the newest, and pass on what
is not a wasm trap.
"""

from __future__ import annotations

import faulthandler
import importlib
import logging
import os
from typing import Any

__all__ = ["init_ray"]

_NO_FAILURE_HANDLER = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


def init_ray(address: str | None, **options: Any) -> bool:
    """``ray.init(address, **options)`` unless this process has joined Ray already; True if this call
    joined it. A caller that joins Ray itself, before it runs wasm, should set
    ``RAY_DISABLE_FAILURE_SIGNAL_HANDLER=1`` first."""
    os.environ.setdefault(_NO_FAILURE_HANDLER, "1")  # for the processes Ray starts from this one
    ray: Any = importlib.import_module("ray")
    if ray.is_initialized():
        return False
    # Ray reads the variable once, when it is first imported (ray._private.ray_constants), and the
    # constant when it joins: a program (or a test run) that imported Ray before gets it set here.
    constants = importlib.import_module("ray._private.ray_constants")
    if os.environ[_NO_FAILURE_HANDLER].strip().lower() in ("1", "true") and hasattr(constants, _NO_FAILURE_HANDLER):
        setattr(constants, _NO_FAILURE_HANDLER, True)
    was_on = faulthandler.is_enabled()
    options.setdefault("include_dashboard", False)
    options.setdefault("log_to_driver", False)
    options.setdefault("logging_level", logging.ERROR)
    ray.init(address=address, **options)
    if not was_on and faulthandler.is_enabled():
        faulthandler.disable()
    return True
