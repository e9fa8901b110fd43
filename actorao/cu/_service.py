"""The node's data service: what a CU worker on another machine reads from the node, and the
checkpoints it ships back (issue 15, "state that can travel").

A remote worker (a Ray-placed one) never opens the node's LMDB: its folder is on another machine. It
asks this service instead, on one ROUTER socket of the node's, on TCP with CURVE under the cluster key
(only members connect; ``Guard``). Each request is a multipart message [token, op, args...], and each
answer [token, one frame]: the values packed as the mailboxes pack items (``pack``), of kind ANSWER, or
FAILED with why. One frame, not a ZeroMQ part per value: a log range of a thousand entries is one send.
Numbers travel as decimal text; an absent value as no value at all.

What it answers is what a worker reads: a process's log (its head, a range, one entry, its spawn
record), whether a shard's commit holds a push (``logged``), a process's stored results, a module's
record and binary, WeaveDrive data, and a process's checkpoint chain when the node holds a newer one
than the worker. What it takes in is checkpoints (``SHIP``): stored when they go on from the node's
chain (``checkpoints.extend``), so a process whose machine is lost resumes elsewhere from a recent
state, not from slot 0. Results come back with the workers' RESULTS frames, and the pool commits them
here (``commit_results``) before anyone hears of them.

One thread answers, reading through the node's own store and shard logs (one environment per OS
process, as LMDB requires). It is off the messages' path: a worker reads here when it loads a process
or catches one up, and the shards push every assignment to it directly.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

import orjson
import zmq

from actorao.cu import _checkpoint as checkpoints
from actorao.mailbox import ClusterKey, bound_address, open_socket, pack
from actorao.persist import ShardLogs, Store

log = logging.getLogger(__name__)

HEAD = b"head"  # pid -> the last slot of its log
LOG = b"log"  # pid, first, last -> slot, entry, ... in slot order
ENTRY = b"entry"  # pid, slot -> the entry
RECORD = b"record"  # pid -> its spawn record
LOGGED = b"logged"  # shard, commit, entries JSON -> b"1", b"0", or nothing while that commit is not in the log
RESULTS_LAST = b"results-last"  # pid -> the last slot with a stored result
RESULTS = b"results"  # pid, first, last -> slot, result, ...
MODULE_META = b"module-meta"  # module id -> its record
MODULE_WASM = b"module-wasm"  # module id -> its binary
DATA_META = b"data-meta"  # data id -> its WeaveDrive record
DATA = b"data"  # data id, offset, length -> those bytes
CHAIN = b"chain"  # pid, newest slot the worker holds -> the node's newest slot, and its chain (base first) if newer
SHIP = b"ship"  # pid, b"whole" or b"", blobs... -> b"ok"; b"whole" (send the whole chain); b"stale"; b"later"
OK = b"ok"  # SHIP's answer when the checkpoints are stored (or the node's are as recent)
ANSWER, FAILED = b"a", b"f"  # the kinds of an answer's frame
_POLL_MS = 100


def number(value: int) -> bytes:
    return str(value).encode()


def maybe(value: bytes | None) -> list[bytes]:
    return [] if value is None else [value]


def maybe_number(value: int | None) -> list[bytes]:
    return [] if value is None else [number(value)]


def pairs(found: list[tuple[int, bytes]]) -> list[bytes]:
    return [part for slot, value in found for part in (number(slot), value)]


class DataService:
    """The node side: a thread that answers remote workers from ``store`` and ``logs``."""

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], address: str, key: ClusterKey, store: Store, logs: ShardLogs
    ) -> None:
        self._store = store
        self._logs = logs
        self._socket = open_socket(context, zmq.ROUTER, address, bind=True, curve=key)
        self.address = bound_address(self._socket)
        self.chains_sent: dict[str, int] = {}  # process -> newest slot of the chain a worker last took from here
        self.shipped = 0  # checkpoints stored from remote workers
        self.answered: collections.Counter[bytes] = collections.Counter()  # requests answered, by op
        self._answers: dict[bytes, Callable[[list[bytes]], list[bytes]]] = {
            HEAD: lambda args: maybe_number(logs.last_slot(args[0].decode())),
            LOG: lambda args: pairs(logs.log_range(args[0].decode(), int(args[1]), int(args[2]))),
            ENTRY: lambda args: maybe(logs.log_entry(args[0].decode(), int(args[1]))),
            RECORD: lambda args: maybe(logs.process_record(args[0].decode())),
            LOGGED: self._logged,
            RESULTS_LAST: lambda args: maybe_number(store.last_slot("results", args[0].decode())),
            RESULTS: lambda args: pairs(store.slot_range("results", args[0].decode(), int(args[1]), int(args[2]))),
            MODULE_META: lambda args: maybe(store.module_meta(args[0].decode())),
            MODULE_WASM: lambda args: maybe(store.module_wasm(args[0].decode())),
            DATA_META: lambda args: maybe(store.data_meta(args[0].decode())),
            DATA: lambda args: maybe(store.data_range(args[0].decode(), int(args[1]), int(args[2]))),
            CHAIN: self._chain,
            SHIP: self._ship,
        }
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="cu-data", daemon=True)
        self._thread.start()

    def commit_results(self, items: list[bytes]) -> None:
        """A remote worker's RESULTS frame items (log key, result, ...): stored before anyone hears of them."""
        results = list(zip(items[0::2], items[1::2], strict=True))
        self._store.computed.write(lambda txn: self._store.put_results(txn, results))

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    # -- answers --------------------------------------------------------------------------------
    def _logged(self, args: list[bytes]) -> list[bytes]:
        entries = {pid: [(slot, body.encode()) for slot, body in found]
                   for pid, found in orjson.loads(args[2]).items()}
        logged = self._logs.logged(int(args[0]), int(args[1]), entries)
        return [] if logged is None else [b"1" if logged else b"0"]

    def _chain(self, args: list[bytes]) -> list[bytes]:
        pid, held = args[0].decode(), int(args[1])
        newest = checkpoints.newest_slot(self._store, pid)
        if newest <= held:
            return [number(newest)]
        chain = checkpoints.read_chain(self._store, pid)
        if chain:
            self.chains_sent[pid] = checkpoints.links(chain[-1])[0]
        return [number(newest), *chain]

    def _ship(self, args: list[bytes]) -> list[bytes]:
        pid, whole, blobs = args[0].decode(), args[1] == b"whole", args[2:]
        # Not before the results up to them are stored here: they come on another socket, and a
        # checkpoint ahead of the results would have a worker that resumes from it skip those slots.
        stored = self._store.last_slot("results", pid)
        if blobs and (stored is None or checkpoints.links(blobs[-1])[0] > stored):
            return [b"later"]
        if checkpoints.extend(self._store, pid, blobs):
            self.shipped += len(blobs)
            return [OK]
        return [b"stale" if whole else b"whole"]

    def _serve(self) -> None:
        socket = self._socket
        try:
            while not self._stopped.is_set():
                if not socket.poll(_POLL_MS):
                    continue
                identity, token, op, *args = socket.recv_multipart()
                try:
                    reply = pack(ANSWER, self._answers[op](args))
                except Exception as exc:  # a bad request, or a store fault: the worker says so and restarts
                    log.exception("the data service could not answer %r", op)
                    reply = pack(FAILED, [f"{type(exc).__name__}: {exc}".encode()])
                self.answered[op] += 1  # before the answer goes: whoever reads it may look here next
                socket.send_multipart([identity, token, reply])
        finally:
            socket.close(linger=0)


__all__ = ["DataService"]
