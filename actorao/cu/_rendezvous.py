"""Where results meet whoever waits for them. The pool hands over each RESULTS frame once; waiters
(``wait``, futures), watchers (the bench's latency probe) and the messenger subscribe here, and a
result already in the store is found there, so none depends on catching the frame.

A waiter takes what is stored, registers for the rest, then looks in the store once more: a result
arriving in between cannot slip past.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from actorao._exceptions import ActoraoError, Timeout
from actorao._future import Future
from actorao.message import Result
from actorao.persist import Store

log = logging.getLogger(__name__)

# A frame's items (result key, result JSON, alternating) and, when none of them sends anything, the
# last key of each process in it, joined (see WorkerPool); otherwise None.
Subscriber = Callable[[list[bytes], bytes | None], None]


class Rendezvous:
    """Results by result key (process ‖ slot), as the workers report them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[bytes, list[_Waiter]] = {}
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self.evaluated = 0  # results that arrived since the node opened

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` with each frame's items (result key, result JSON, alternating) and its
        quiet processes' last keys (or None), on the pool's listener thread: it must be quick and must
        not raise. Returns the unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def arrived(self, items: list[bytes], latest: bytes | None = None) -> None:
        """A RESULTS frame's items, and ``latest`` if none of them sends anything."""
        self.evaluated += len(items) // 2
        for subscriber in list(self._subscribers):
            try:
                subscriber(items, latest)
            except Exception:  # a faulty watcher must not keep results from their waiters
                log.exception("a results subscriber failed")
        self._wake(items)

    def _wake(self, items: list[bytes]) -> None:
        with self._lock:
            waiting = self._waiting
            if not waiting:  # a stream nobody waits on result by result (send_many, then watchers)
                return
            for at in range(0, len(items), 2):
                waiters = waiting.pop(bytes(items[at]), None)
                if waiters:
                    for waiter in waiters:
                        waiter.deliver(bytes(items[at]), bytes(items[at + 1]))

    def deliver_stored(self, keys: Iterable[bytes] | None = None) -> None:
        """Wake the waiters of ``keys`` (default: every waiter) whose results are already stored: a
        worker may have committed them and died before it reported them."""
        if keys is None:
            with self._lock:
                keys = list(self._waiting)
        found = self._store.results_at(list(keys))
        if found:
            self._wake([part for pair in found for part in pair])

    def wait(self, keys: list[bytes], timeout: float) -> list[bytes]:
        """The results at ``keys``, in order, waiting up to ``timeout`` seconds for all of them."""
        stored = self._store.results_at(keys)
        if len(stored) == len(keys):  # all in (a stream's, asked for once it is done): no waiter at all
            return [value for _, value in stored]
        waiter = self._register(keys, None, stored)
        if not waiter.done.wait(timeout):
            self._forget(waiter)
            raise Timeout(f"{waiter.remaining} of {len(waiter.values)} results still missing after {timeout} s")
        if waiter.error is not None:
            raise waiter.error
        return [waiter.values[key] for key in keys]  # type: ignore[misc]

    def future(self, key: bytes) -> Future[Result]:
        future: Future[Result] = Future()
        self._register([key], future)
        return future

    def fail_all(self, error: ActoraoError) -> None:
        """Every waiter gets ``error`` (the node is closing)."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for waiter in {id(w): w for waiters in waiting.values() for w in waiters}.values():
            waiter.fail(error)

    def _register(
        self, keys: list[bytes], future: Future[Result] | None, stored: list[tuple[bytes, bytes]] | None = None,
    ) -> _Waiter:
        """A waiter for ``keys``: what is stored already (``stored``, when the caller has read it) is
        taken from the store, unregistered (a stream's results are mostly in by the time they are
        asked for); the rest is registered, then looked for once more, for a result that arrived in
        between."""
        waiter = _Waiter(keys, future)
        for key, value in self._store.results_at(list(waiter.values)) if stored is None else stored:
            waiter.deliver(key, value)  # nobody else can reach it yet: no lock
        if not waiter.remaining:
            return waiter
        missing = [key for key, value in waiter.values.items() if value is None]
        with self._lock:
            for key in missing:
                self._waiting.setdefault(key, []).append(waiter)
        self.deliver_stored(missing)
        return waiter

    def _forget(self, waiter: _Waiter) -> None:
        with self._lock:
            for key in waiter.values:
                waiters = self._waiting.get(key)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiting[key]


class _Waiter:
    """Waits for the results of a set of keys with one event. ``deliver`` is called under the
    rendezvous's lock, so its counting needs no lock of its own."""

    __slots__ = ("done", "error", "future", "remaining", "values")

    def __init__(self, keys: list[bytes], future: Future[Result] | None) -> None:
        self.values: dict[bytes, bytes | None] = dict.fromkeys(keys)
        self.remaining = len(self.values)
        self.done = threading.Event()
        self.error: ActoraoError | None = None
        self.future = future

    def deliver(self, key: bytes, value: bytes) -> None:
        if self.values.get(key, b"") is None:
            self.values[key] = value
            self.remaining -= 1
            if not self.remaining:
                self.done.set()
                if self.future is not None and not self.future.done():
                    self.future.set_result(Result.from_json(value))

    def fail(self, error: ActoraoError) -> None:
        self.error = error
        self.done.set()
        if self.future is not None and not self.future.done():
            self.future.set_exception(error)
