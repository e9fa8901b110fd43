"""The pinning of ``bench/round_trip.py --pin-lanes``: with this folder on PYTHONPATH and
$ACTORAO_PIN_LANES set to a list of CPUs (``1`` or ``2,3``), every Python process of a node run (the
caller, its shards, its workers) keeps its threads off those CPUs, and the workers' evaluation lanes
(``Lanes._thread_main`` in ``actorao/cu/_lanes.py``) on them only. Nothing of it is imported by actorao
itself: it shows what a split of the cores between evaluation and everything else does to a serial
round trip (a wake-up then never queues behind a VM call on its core), before the node offers one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any


def cpus(text: str) -> set[int]:
    """``1``, ``2,3`` or ``4-7`` as a set of CPU numbers."""
    found: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


class _Finder(importlib.abc.MetaPathFinder):
    """Loads ``actorao.cu._lanes`` as usual, then has each lane thread pin itself first."""

    def __init__(self, lanes: set[int]) -> None:
        self.lanes = lanes

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "actorao.cu._lanes":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        load, lanes = loader.exec_module, self.lanes

        def exec_module(module: ModuleType) -> None:
            load(module)
            original = module.Lanes._thread_main

            def _thread_main(self: Any) -> None:
                os.sched_setaffinity(0, lanes)  # this thread only
                original(self)

            module.Lanes._thread_main = _thread_main

        loader.exec_module = exec_module
        return spec


if os.environ.get("ACTORAO_PIN_LANES"):
    _LANES = cpus(os.environ["ACTORAO_PIN_LANES"])
    _REST = set(os.sched_getaffinity(0)) - _LANES
    if _REST:  # the main thread, and every thread it starts from now on
        os.sched_setaffinity(0, _REST)
        sys.meta_path.insert(0, _Finder(_LANES))
