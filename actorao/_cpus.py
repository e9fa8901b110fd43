"""Which cores evaluate (``NodeConfig.evaluation_cpus``): the workers' evaluation threads (``cu/_lanes.py``)
run on those CPUs only, and evaluate every message (a worker's main thread then runs no small message
itself: ``Worker.inline``), and every other thread of the node (its listeners, the shards, the workers'
main threads, ZeroMQ's I/O threads) on the rest of the machine's CPUs.

A serial round trip wakes several threads while its message is evaluated: the acknowledgement's path, the
result's listener, the waiting caller. Left to the kernel, a wake-up often queues on the core that runs
the VM call while another core idles (``perf sched`` on a 2-core box: one wake-up in nine waited over
0.5 ms). Keeping the two apart removes that wait, at the price of the cores the control plane keeps for
itself: opt in where latency matters more than evaluation capacity.

Linux only (``os.sched_setaffinity``); each call pins the calling thread alone, and threads it starts
afterwards start where it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator

from actorao._exceptions import InvalidMessage

__all__ = ["parse", "pin", "pinned", "rest_of", "spelled"]

log = logging.getLogger(__name__)


def parse(text: str) -> frozenset[int]:
    """``1``, ``2,3`` or ``4-7,9`` as a set of CPU numbers."""
    found: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"{part.strip()!r} is not a CPU number or a range of them (2, or 4-7)")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"the range {part.strip()!r} runs backwards")
        found.update(range(low, high + 1))
    return frozenset(found)


def rest_of(evaluation: Iterable[int]) -> frozenset[int]:
    """The CPUs this process may use that are not ``evaluation``: where everything else runs. Every CPU
    of ``evaluation`` must be one this process may use, and at least one must be left over."""
    evaluation = frozenset(evaluation)
    available = frozenset(os.sched_getaffinity(0))
    missing = sorted(evaluation - available)
    if missing:
        raise InvalidMessage("evaluation_cpus", f"CPU {', '.join(map(str, missing))} is not one this process may "
                             f"use (it may use {spelled(available)})")
    rest = available - evaluation
    if not rest:
        raise InvalidMessage("evaluation_cpus", f"{spelled(evaluation)} is every CPU this process may use: leave "
                             "at least one for the node's other threads, or leave evaluation_cpus unset")
    return rest


def pin(cpus: Iterable[int]) -> bool:
    """The calling thread, and the threads it starts from now on, run on ``cpus`` only. Nothing when empty.
    A set the kernel refuses (the machine's CPUs changed under a running node: a cpuset shrank, a CPU
    went offline) leaves the thread where it was, with a warning: a worker or shard that restarts then
    still runs, unpinned, rather than failing its every start. Returns whether the thread is on ``cpus``."""
    cpus = frozenset(cpus)
    if not cpus:
        return False
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        log.warning("cannot keep this thread on CPUs %s (%s): it runs where it was", spelled(cpus), exc)
        return False
    return True


@contextlib.contextmanager
def pinned(cpus: Iterable[int]) -> Iterator[None]:
    """``pin`` for the block only: threads and processes started inside it stay on ``cpus``, and the
    calling thread goes back where it was."""
    cpus = frozenset(cpus)
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def spelled(cpus: Iterable[int]) -> str:
    """A set of CPUs as ``parse`` reads it back: ``1,3,4``."""
    return ",".join(map(str, sorted(cpus)))
