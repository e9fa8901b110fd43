"""A worker's evaluation threads: each process's work runs in order, on one thread at a time, so a
process that burns its whole fuel budget holds one thread and its neighbours go on on the others.

A wasmtime call goes through ctypes, which lets go of the GIL for the call's length; host callbacks
(aos's) take it back briefly. A process whose messages are small keeps the GIL through its calls
instead, each for at most HELD_FUEL (``HostedProcess._run`` in ``cu/_process.py``). The worker's main
thread keeps the sockets and the commits: it queues each process's work here, and collects what is
finished when ``fd`` (an eventfd) is readable or on its next tick. It runs a held process's turn itself
when no thread has work of that process (``Worker.run_inline`` in ``cu/_worker.py``), and puts what that
turn finished among the threads' (``finished_here``). In the common case one thread
takes every queued process in turn, and no other thread is woken; another is woken only when queued
work has waited ``stall`` seconds without any thread taking it.

A thread that ends a turn that was the worker's only work offers it to ``direct`` first, which commits
and reports it there and then when the main thread is not at work (``_Direct`` in ``cu/_worker.py``):
the result of a lone long message then goes out without waking the main thread, about 0.1 ms of a
serial round trip on aos. Under load the main thread collects, and commits many turns at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from actorao import _cpus

log = logging.getLogger(__name__)

Op = tuple[bytes, Any]  # (kind, what it carries for one process); a list payload is a batch of items
_SIGNAL_AT = 256  # finished results that wake the main loop even while the threads have more to do


@dataclasses.dataclass(slots=True)
class Finished:
    """What one turn of a process's work produced, to commit together: results and the checkpoints
    taken with them (a checkpoint stored without its slot's result would skip that result for ever),
    and the replies to send once they are committed."""

    results: list[tuple[bytes, bytes]]
    checkpoints: list[Any]
    replies: list[tuple[bytes, list[bytes]]]
    process: str | None = None
    forgot: bool = False  # the turn began by forgetting the process's state (``cu/_ahead.py``)
    left: list[Op] | None = None  # what a turn on the worker's main thread handed on to the threads


class Lanes:
    """Runs ``run(pid, ops)`` on up to ``threads`` threads, never two at once for one ``pid``."""

    def __init__(
        self,
        run: Callable[[str, list[Op]], Finished],
        threads: int,
        *,
        stall: float = 0.005,
        clock: Callable[[], float] = time.monotonic,
        direct: Callable[[Finished], bool] | None = None,
        cpus: Iterable[int] = (),
    ) -> None:
        self._run = run
        self._cpus = frozenset(cpus)  # where the threads run (``NodeConfig.evaluation_cpus``); empty: anywhere
        self.stall = stall
        # Takes a finished turn off the main thread's hands (True), or leaves it to be collected (False).
        # Called under the lock, only for the worker's only work (``_alone``): nothing finished earlier
        # waits to be collected, so what it reports keeps its place after every earlier turn.
        self._direct = direct
        self._clock = clock
        self._cond = threading.Condition()
        self._queued: dict[str, list[Op]] = {}  # work not yet taken, by process, in arrival order
        self._ready: deque[str] = deque()  # processes with queued work and no thread on them
        self._running: dict[str, float] = {}  # process -> when its thread took it
        self._finished: list[Finished] = []
        self._finished_results = 0
        self._items: dict[str, int] = {}  # items queued (not taken) by process: a batch counts its length
        self.queued_items = 0
        self._waiting = 0  # threads waiting for work
        self._taken_at = clock()  # when a thread last took a process's work
        self._signalled = False
        self._stopped = False
        self.fatal: BaseException | None = None  # a host fault on a thread: the worker must exit
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._threads = [
            threading.Thread(target=self._thread_main, name=f"lane-{number}", daemon=True) for number in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    # -- the main loop's side -------------------------------------------------------------------
    def submit(self, work: dict[str, list[Op]]) -> None:
        """Queue each process's ops behind what it already has."""
        if not work:
            return
        with self._cond:
            for pid, ops in work.items():
                queued = self._queued.get(pid)
                if queued is None:
                    self._queued[pid] = ops
                    if pid not in self._running:
                        self._ready.append(pid)
                else:
                    _append(queued, ops)
                items = sum(_size(op) for op in ops)
                self._items[pid] = self._items.get(pid, 0) + items
                self.queued_items += items
            if not self._running and self._waiting:
                self._taken_at = self._clock()
                self._cond.notify()

    def queued(self, pids: list[str]) -> dict[str, tuple[int, Op | None]]:
        """How many items each of ``pids`` has waiting (not running), and the last of its waiting ops."""
        with self._cond:
            found = {}
            for pid in pids:
                queued = self._queued.get(pid)
                found[pid] = self._items.get(pid, 0), (queued[-1] if queued else None)
            return found

    def nudge(self) -> None:
        """Wake one more thread when queued work has waited ``stall`` with no thread taking any: the
        threads at work are in long messages."""
        with self._cond:
            if self._ready and self._waiting and self._clock() - self._taken_at >= self.stall:
                self._taken_at = self._clock()
                self._cond.notify()

    def collect(self) -> list[Finished]:
        """What is finished since the last call, in the order it finished."""
        with self._cond:
            finished, self._finished = self._finished, []
            self._finished_results = 0
            if self._signalled:
                self._signalled = False
                try:
                    os.eventfd_read(self.fd)
                except BlockingIOError:
                    pass
        if self.fatal is not None:
            raise self.fatal
        return finished

    def signal(self) -> None:
        """Wake the main thread (``fd`` turns readable until its next ``collect``). ``direct`` may call
        this: the lock is re-entrant."""
        with self._cond:
            self._wake_main()

    def finished_here(self, finished: Finished) -> None:
        """A turn the submitting thread ran itself, in its place among the threads' finished turns:
        after every earlier turn of its process, and before any of the work it ``left``."""
        with self._cond:
            self._finished.append(finished)
            self._finished_results += len(finished.results)

    def has(self, pid: str) -> bool:
        """``pid`` has work queued or running. Only ``submit`` adds work, so on the thread that submits,
        a False holds until that thread submits work of ``pid``."""
        return pid in self._queued or pid in self._running

    def busy(self) -> bool:
        """Work is queued, running, or finished and not yet collected."""
        return bool(self._queued or self._running or self._finished)

    def idle(self) -> bool:
        return not self.busy()

    def only_long_turns(self, patience: float) -> bool:
        """Nothing is left but turns that have run ``patience`` seconds or more, and what waits
        behind them: a stopping worker need not wait for a long message, which is in the log."""
        with self._cond:
            now = self._clock()
            return (
                not self._finished
                and all(now - taken >= patience for taken in self._running.values())
                and all(pid in self._running for pid in self._queued)
            )

    def stop(self) -> bool:
        """Let the threads end after their current work; True when none is running any."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            running = bool(self._running)
        return not running

    def close(self) -> None:
        os.close(self.fd)

    # -- the threads ----------------------------------------------------------------------------
    def _thread_main(self) -> None:
        _cpus.pin(self._cpus)
        # A turn's end and the next turn's start share one round of the lock: with many processes
        # a turn is often one message, and each round costs about what its message does.
        pid: str | None = None
        finished: Finished | None = None
        while True:
            with self._cond:
                if pid is not None and finished is not None:
                    if self._direct is not None and self._alone() and self._offer(finished):
                        self._done(pid)
                    else:
                        self._finish(pid, finished)
                while not self._ready and not self._stopped:
                    self._waiting += 1
                    self._cond.wait()
                    self._waiting -= 1
                if self._stopped:
                    return
                pid = self._ready.popleft()
                ops = self._queued.pop(pid)
                self.queued_items -= self._items.pop(pid, 0)
                self._taken_at = self._running[pid] = self._clock()
            try:
                finished = self._run(pid, ops)
            except BaseException as exc:  # a host fault: not the process's doing; the worker exits
                log.exception("evaluating %s failed on the host's side", pid)
                finished = Finished([], [], [])
                self.fatal = exc

    def _offer(self, finished: Finished) -> bool:
        """``direct(finished)``; under the lock. A host fault in its commit or report is the worker's
        end, as it is on the main thread: the turn goes to be collected, and ``collect`` raises."""
        assert self._direct is not None
        try:
            return self._direct(finished)
        except BaseException as exc:
            log.exception("committing a finished turn on its thread failed")
            self.fatal = exc
            return False

    def _alone(self) -> bool:
        """This thread's turn is the worker's only work: nothing else runs, waits for a thread, or
        waits to be collected. Under the lock. Under load the main thread commits many turns at once."""
        return len(self._running) == 1 and not self._ready and not self._finished and self.fatal is None

    def _done(self, pid: str) -> None:
        """``pid``'s turn is over; under the lock."""
        del self._running[pid]
        if pid in self._queued:  # more arrived while it ran
            self._ready.append(pid)

    def _finish(self, pid: str, finished: Finished) -> None:
        """Hand over a finished turn; under the lock."""
        self._done(pid)
        self._finished.append(finished)
        self._finished_results += len(finished.results)
        if self.fatal is not None or not self._ready or self._finished_results >= _SIGNAL_AT:
            self._wake_main()

    def _wake_main(self) -> None:
        """Make ``fd`` readable, once until the next ``collect``; under the lock."""
        if not self._signalled:
            self._signalled = True
            os.eventfd_write(self.fd, 1)


def _append(queued: list[Op], ops: list[Op]) -> None:
    """Queue ``ops`` after ``queued``, an assignment batch joining the one before it."""
    for op in ops:
        if queued and op[0] == queued[-1][0] and isinstance(op[1], list) and isinstance(queued[-1][1], list):
            queued[-1][1].extend(op[1])
        else:
            queued.append(op)


def _size(op: Op) -> int:
    return len(op[1]) if isinstance(op[1], list) else 1
