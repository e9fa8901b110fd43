"""A remote CU worker's view of the node's data: read over the network, kept on its own disk.

A worker on another machine (a Ray-placed one) reaches the node's data service (``_service``) instead
of its LMDB:
- ``RemoteLogs`` reads the shards' logs (``RemoteAheadLogs`` adds the pushes ahead);
- ``RemoteStore`` is the worker's own store, in a folder of its machine, that asks the node for what
  it does not hold: results, module records and binaries, WeaveDrive data, and a process's checkpoint
  chain when the node's is newer than its own (a process placed here after its machine was lost);
- ``Shipper`` ships every checkpoint the worker takes back to the node, in the background, so that the
  node always holds a recent state of each process.

Results: the worker stores its own in its store, as a local worker does, and reports them; the node
stores what it is told. A process's last result is the later of the two, so a process loaded again on
this worker never evaluates again what it reported and the node has not stored yet. The results of an
earlier run of the worker are dropped when it starts: they may never have reached the node, whose
results are then the ones that count.

Any failure to reach the node is a ``ConnectionError``: a host fault, which ends the worker, and its
supervisor starts another.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import zmq

from actorao.cu import _checkpoint as checkpoints
from actorao.cu._service import (
    ANSWER,
    CHAIN,
    DATA,
    DATA_META,
    ENTRY,
    HEAD,
    LOG,
    LOGGED,
    MODULE_META,
    MODULE_WASM,
    OK,
    RECORD,
    RESULTS,
    RESULTS_LAST,
    SHIP,
    number,
)
from actorao.mailbox import ClusterKey, open_socket, unpack
from actorao.persist import Store

log = logging.getLogger(__name__)

CALL_TIMEOUT = 60.0  # seconds for the node to answer one request (a module binary may be tens of MB)
SHIP_PATIENCE = 30.0  # seconds a checkpoint waits for the node to store the results up to it


class RemoteError(ConnectionError):
    """The node's data service could not be reached, or could not answer."""


class ServiceClient:
    """Requests to the node's data service, from any thread: each thread has its own socket."""

    def __init__(self, address: str, key: ClusterKey, timeout: float = CALL_TIMEOUT) -> None:
        self.address = address
        self._key = key
        self._timeout = timeout
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._local = threading.local()
        self._tokens = itertools.count()

    def _socket(self) -> zmq.Socket[bytes]:
        socket: zmq.Socket[bytes] | None = getattr(self._local, "socket", None)
        if socket is None:
            socket = self._local.socket = open_socket(self._context, zmq.DEALER, self.address, bind=False,
                                                      curve=self._key)
        return socket

    def call(self, op: bytes, *args: bytes) -> list[bytes]:
        socket = self._socket()
        token = number(next(self._tokens))
        socket.send_multipart([token, op, *args])
        while True:
            if not socket.poll(round(self._timeout * 1000)):
                raise RemoteError(f"the node's data service at {self.address} did not answer {op.decode()} "
                                  f"within {self._timeout:g} s")
            reply = socket.recv_multipart()
            if reply[0] == token:  # else a late answer to a call that timed out on this thread
                break
        kind, values = unpack(reply[1])
        if kind != ANSWER:
            raise RemoteError(f"the node's data service could not answer {op.decode()}: "
                              f"{b''.join(values).decode(errors='replace')}")
        return values

    def one(self, op: bytes, *args: bytes) -> bytes | None:
        found = self.call(op, *args)
        return found[0] if found else None

    def number(self, op: bytes, *args: bytes) -> int | None:
        found = self.one(op, *args)
        return None if found is None else int(found)

    def close(self) -> None:
        """Close every thread's socket (the threads are done with them)."""
        self._context.destroy(linger=0)


def _pairs(found: list[bytes]) -> list[tuple[int, bytes]]:
    return [(int(found[at]), found[at + 1]) for at in range(0, len(found), 2)]


class RemoteLogs:
    """The shards' logs, read from the node."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def process_record(self, pid: str) -> bytes | None:
        return self.client.one(RECORD, pid.encode())

    def log_entry(self, pid: str, slot: int) -> bytes | None:
        return self.client.one(ENTRY, pid.encode(), number(slot))

    def last_slot(self, pid: str) -> int | None:
        return self.client.number(HEAD, pid.encode())

    def log_range(self, pid: str, first: int, last: int) -> list[tuple[int, bytes]]:
        if last < first:
            return []
        return _pairs(self.client.call(LOG, pid.encode(), number(first), number(last)))

    def logged(self, shard: int, commit: int, entries: dict[str, list[tuple[int, bytes]]]) -> bool | None:
        sent = orjson.dumps({pid: [(slot, body.decode()) for slot, body in found] for pid, found in entries.items()})
        answer = self.client.one(LOGGED, number(shard), number(commit), sent)
        return None if answer is None else answer == b"1"

    def close(self) -> None:
        """Nothing of its own: the worker closes the client."""


class RemoteStore(Store):
    """A remote worker's own store at ``path`` on its machine (checkpoints, compiled modules, its
    results), which asks the node through ``client`` for what it does not hold."""

    def __init__(self, path: str | Path, client: ServiceClient, **settings: Any) -> None:
        super().__init__(path, **settings)
        self.client = client
        # Told of a process whose chain here is newer than the node's (an earlier run of this worker
        # took it and did not ship it): the Shipper's ``ship_chain``.
        self.ahead_of_node: Callable[[str], None] = lambda pid: None
        self.computed.forget_results()  # an earlier run's: the node's results are the ones that count

    def last_slot(self, db_name: str, process: str) -> int | None:
        mine = super().last_slot(db_name, process)
        if db_name != "results":
            return mine
        node = self.client.number(RESULTS_LAST, process.encode())
        return mine if node is None else node if mine is None else max(mine, node)

    def slot_range(self, db_name: str, process: str, first: int, last: int) -> list[tuple[int, bytes]]:
        mine = super().slot_range(db_name, process, first, last)
        if db_name != "results" or last < first:
            return mine
        merged = dict(_pairs(self.client.call(RESULTS, process.encode(), number(first), number(last))))
        merged.update(mine)
        return sorted(merged.items())

    def checkpoint_chain(self, pid: str, is_base: Callable[[bytes], bool]) -> list[bytes]:
        """The newer of this machine's chain and the node's: the node's is taken and kept here. A
        chain here newer than the last result that counts (an earlier run of this worker took it,
        and its results never reached the node) is dropped: resuming from it would skip those slots."""
        chain = super().checkpoint_chain(pid, is_base)
        held = checkpoints.links(chain[-1])[0] if chain else -1
        if held >= 0:  # only then: ``recover`` asks the node for the last result right after this
            counted = self.last_slot("results", pid)
            if counted is None or held > counted:
                self.computed.write(lambda txn: self.forget_checkpoints(txn, pid))
                chain, held = [], -1
        newest, *found = self.client.call(CHAIN, pid.encode(), number(held))
        if not found:
            if int(newest) < held:
                self.ahead_of_node(pid)
            return chain
        checkpoints.replace_chain(self, pid, found)
        return found

    def put_checkpoint(self, txn: Any, pid: str, slot: int, blob: bytes, *, prune_before: bool) -> None:
        """Store a checkpoint, and drop this worker's results of ``pid`` below its slot: they are the
        node's to keep, and here only the results after the newest checkpoint are read again (the
        failed slots a reload skips, and the last one). Without this a long-lived worker's disk
        would fill with a copy of every result it ever reported."""
        super().put_checkpoint(txn, pid, slot, blob, prune_before=prune_before)
        self.forget_results_before(txn, pid, slot)

    def local_chain(self, pid: str) -> list[bytes]:
        """This machine's chain of ``pid`` only."""
        return super().checkpoint_chain(pid, checkpoints.is_base)

    def module_meta(self, module_id: str, txn: Any = None) -> bytes | None:
        return super().module_meta(module_id, txn) or self.client.one(MODULE_META, module_id.encode())

    def module_wasm(self, module_id: str) -> bytes | None:
        return super().module_wasm(module_id) or self.client.one(MODULE_WASM, module_id.encode())

    def data_meta(self, data_id: str) -> bytes | None:
        return super().data_meta(data_id) or self.client.one(DATA_META, data_id.encode())

    def data_range(self, data_id: str, offset: int, length: int) -> bytes | None:
        found = super().data_range(data_id, offset, length)
        if found is not None:
            return found
        return self.client.one(DATA, data_id.encode(), number(offset), number(length))


class Shipper:
    """Ships a remote worker's checkpoints to the node on a thread of its own, in the order they were
    taken. A reply that must follow them (an EVICTED, whose process's new worker starts from the
    node's chain; a state read's checkpoint) waits behind them with ``after``, and comes back to the
    main thread, which sends it, through ``take_ready`` when ``fd`` is readable."""

    def __init__(self, client: ServiceClient, store: RemoteStore) -> None:
        self._client = client
        self._store = store
        # (process, its checkpoint, or None: its whole chain), a reply to send after them, or None: the end.
        self._queue: collections.deque[tuple[str, checkpoints.Encoded | None] | bytes | None] = collections.deque()
        self._cond = threading.Condition()
        self._pending = 0  # queued and not yet done
        self._ready: collections.deque[bytes] = collections.deque()
        self.fd, self._wake = os.pipe()
        os.set_blocking(self.fd, False)
        self.shipped = 0
        self._stale: set[str] = set()  # processes whose chain the node refused: no delta until a base
        store.ahead_of_node = self.ship_chain
        self._thread = threading.Thread(target=self._run, name="cu-shipper", daemon=True)
        self._thread.start()

    def ship(self, taken: list[tuple[str, checkpoints.Encoded]]) -> None:
        with self._cond:
            self._queue.extend(taken)
            self._pending += len(taken)
            self._cond.notify()

    def ship_chain(self, pid: str) -> None:
        """Ship the whole chain of ``pid`` that this machine holds."""
        with self._cond:
            self._queue.append((pid, None))
            self._pending += 1
            self._cond.notify()

    def after(self, frame: bytes) -> bool:
        """Queue ``frame`` behind the checkpoints being shipped; False when none are (send it now)."""
        with self._cond:
            if not self._pending:
                return False
            self._queue.append(frame)
            self._pending += 1
            self._cond.notify()
            return True

    def take_ready(self) -> list[bytes]:
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            pass
        ready = []
        while self._ready:
            ready.append(self._ready.popleft())
        return ready

    def close(self, timeout: float) -> list[bytes]:
        """Ship what is queued, for up to ``timeout`` seconds; the replies that were waiting."""
        with self._cond:
            self._queue.append(None)
            self._cond.notify()
        self._thread.join(timeout)
        ready = self.take_ready()
        ready += [item for item in self._queue if isinstance(item, bytes)]
        os.close(self.fd)
        os.close(self._wake)
        return ready

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                item = self._queue.popleft()
            if item is None:
                return
            if isinstance(item, bytes):
                self._ready.append(item)
                os.write(self._wake, b"x")
            else:
                self._ship(*item)
            with self._cond:
                self._pending -= 1

    def _later(self, *request: bytes) -> bytes | None:
        """SHIP, again while the node says "later": its results up to the checkpoint, reported before it
        was shipped, are on their way on the results socket."""
        pause = 0.01
        deadline = time.monotonic() + SHIP_PATIENCE
        while True:
            answer = self._client.one(*request)
            if answer != b"later" or time.monotonic() > deadline:
                return answer
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _ship(self, pid: str, encoded: checkpoints.Encoded | None) -> None:
        """One checkpoint (None: the whole chain); the whole chain when the node's does not go on to
        the one (it missed one, or this worker's chain started before it took the node's). Not shipped
        is not lost: the node's older checkpoint and the log make the same state."""
        if encoded is not None and not encoded.full and pid in self._stale:
            return  # it would not link either: the next base starts a chain the node takes
        try:
            answer = b"whole" if encoded is None else self._later(SHIP, pid.encode(), b"", encoded.blob)
            if answer == b"whole":
                answer = self._later(SHIP, pid.encode(), b"whole", *self._store.local_chain(pid))
            if answer == OK:
                self.shipped += 1
                self._stale.discard(pid)
            elif answer == b"later":
                log.warning("the node did not store the results of %s up to its checkpoint within %g s: not "
                            "shipped", pid, SHIP_PATIENCE)
            else:
                self._stale.add(pid)
                log.info("the node holds a checkpoint of %s that this worker's chain does not go on from", pid)
        except Exception:
            log.exception("could not ship a checkpoint of %s to the node", pid)


__all__ = ["RemoteError", "RemoteLogs", "RemoteStore", "ServiceClient", "Shipper"]
