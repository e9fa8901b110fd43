"""The hop probe of ``bench/round_trip.py --hops``: with this folder on PYTHONPATH and $ACTORAO_HOPS_DIR set,
every Python process of a node run (the caller, its shards, its workers) wraps the functions named in
``HOOKS`` as their modules load, and writes one row per call: [name, begin ns, end ns, thread, extra], in
the machine's monotonic clock (``perf_counter_ns``), so that the rows of all processes line up. The VM
call also records its thread's CPU time, page faults and context switches. Nothing of it is imported by
actorao itself: the hot paths stay as they are, and a name this checkout lacks is skipped.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import importlib.util
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import orjson

HOOKS = {
    "actorao.node": ["Node.send", "Node.result"],
    "actorao.su._client": ["Schedulers._send", "Schedulers._dispatch"],
    "actorao.su._shard": ["Shard.take", "_Replies.push_ahead", "_Replies.durable", "_Replies.committed"],
    "actorao.su._scheduler": ["SchedulerUnit._commit"],
    "actorao.cu._worker": ["_take", "Worker.run", "_commit_and_report"],
    "actorao.cu._ahead": ["Ahead.confirmed"],
    "actorao.cu._pool": ["WorkerPool._dispatch"],
    "actorao.vm._instance": ["Instance.call"],
}
_COUNTED = {"Instance.call"}  # rows with the thread's CPU, faults and context switches
_SKIP_EMPTY = {"_take"}  # a poll that found nothing is no hop


def _kind() -> str:
    argv = " ".join(getattr(sys, "orig_argv", sys.argv))
    return "worker" if "actorao.cu" in argv else "shard" if "actorao.su" in argv else "caller"


class _Rows:
    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, f"{_kind()}-{os.getpid()}.jsonl")
        self.rows: list[list[Any]] = []
        self.lock = threading.Lock()
        atexit.register(self.flush)

    def add(self, row: list[Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= 4096:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            rows, self.rows = self.rows, []
        if rows:
            with open(self.path, "ab") as out:
                out.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))


def _wrapped(name: str, function: Callable[..., Any], rows: _Rows) -> Callable[..., Any]:
    counted, skip_empty = name in _COUNTED, name in _SKIP_EMPTY

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if counted:
            usage, cpu = resource.getrusage(resource.RUSAGE_THREAD), time.thread_time_ns()
        began = time.perf_counter_ns()
        out = None
        try:
            out = function(*args, **kwargs)
            return out
        finally:
            ended = time.perf_counter_ns()
            if not (skip_empty and not out):
                row: list[Any] = [name, began, ended, threading.current_thread().name]
                if counted:
                    cpu_end, after = time.thread_time_ns(), resource.getrusage(resource.RUSAGE_THREAD)
                    row.append({"cpu": cpu_end - cpu, "minflt": after.ru_minflt - usage.ru_minflt,
                                "majflt": after.ru_majflt - usage.ru_majflt,
                                "ivcsw": after.ru_nivcsw - usage.ru_nivcsw, "vcsw": after.ru_nvcsw - usage.ru_nvcsw})
                rows.add(row)

    return wrapper


def _patch(module: ModuleType, names: list[str], rows: _Rows) -> None:
    for qualname in names:
        *path, last = qualname.split(".")
        owner: Any = module
        for part in path:
            owner = getattr(owner, part, None)
        function = getattr(owner, last, None) if owner is not None else None
        if function is not None:
            setattr(owner, last, _wrapped(qualname, function, rows))


class _Finder(importlib.abc.MetaPathFinder):
    """Loads each hooked module as usual, then wraps its functions."""

    def __init__(self, rows: _Rows) -> None:
        self.rows = rows

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        names = HOOKS.get(fullname)
        if names is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        load = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            load(module)
            _patch(module, names, self.rows)

        loader.exec_module = exec_module
        return spec


if os.environ.get("ACTORAO_HOPS_DIR"):
    sys.meta_path.insert(0, _Finder(_Rows(os.environ["ACTORAO_HOPS_DIR"])))
