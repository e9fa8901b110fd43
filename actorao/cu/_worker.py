"""A CU worker: one OS process hosting many AO processes, fed batches over ZeroMQ.

Two sockets feed it: the node's (wakes, dry runs, evictions, stop) and its feed, where the scheduler
shards push each commit's assignments straight to the worker of their processes. The loop takes every
frame that is waiting on either, evaluates it, writes all the results in one LMDB transaction, then
reports them back in one frame.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import orjson
import zmq

from actorao._config import DEFAULT_MAX_MAP_SIZE
from actorao._exceptions import ModuleError
from actorao.cu import _checkpoint as checkpoints
from actorao.cu._modules import ModuleRegistry
from actorao.cu._process import HostedProcess, Limits, process_env
from actorao.mailbox import (
    ASSIGN,
    DIGEST,
    DRY_RESULT,
    DRY_RUN,
    EVICT,
    EVICTED,
    READY,
    RESULTS,
    STOP,
    WAKE,
    feed_address,
    open_socket,
    pack,
    results_address,
    unpack,
    worker_address,
)
from actorao.persist import ShardLogs, Store, log_key, split_key
from actorao.supervisor import die_with_parent, start_heartbeat
from actorao.vm import (
    Evaluator,
    HostResourceError,
    error_result,
)

log = logging.getLogger(__name__)

_MAX_FRAMES_PER_COMMIT = 64
_HOST_FAULTS = (HostResourceError, MemoryError, OSError, lmdb.Error)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerConfig:
    index: int
    data_path: str
    runtime: str
    limits: Limits
    map_size: int
    parent: int = 0  # the node's pid
    shards: int = 1  # scheduler shards: where the logs are
    max_map_size: int = DEFAULT_MAX_MAP_SIZE

    def to_json(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        doc = orjson.loads(text)
        doc["limits"] = Limits(**doc["limits"])
        return cls(**doc)


class Worker:
    """What a worker knows: its compiled modules and its hosted processes."""

    def __init__(
        self, config: WorkerConfig, store: Store, compute_clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.config = config
        self.store = store  # results, checkpoints, modules
        self.logs = ShardLogs(store, config.shards, map_size=config.map_size, metasync=False)  # read only
        self.compute_clock = compute_clock  # drives the checkpoint_ms policy; a test fixes it
        self.modules = ModuleRegistry(store, keep_artifacts=False)
        self.processes: dict[str, HostedProcess] = {}
        self.broken: dict[str, str] = {}  # process id -> why it cannot be evaluated
        self.broken_answered: dict[str, int] = {}  # process id -> next slot to answer with its Error
        self.checkpoints: list[tuple[str, checkpoints.Encoded]] = []  # taken since the last commit
        # Moved to another worker: a shard's assignments for them that were on their way here when
        # they left are dropped (they are in the log, which their new worker reads) until a WAKE
        # brings them back.
        self.evicted: set[str] = set()

    def _checkpoint_taken(self, pid: str, encoded: checkpoints.Encoded) -> None:
        self.checkpoints.append((pid, encoded))

    def hosted(self, pid: str) -> HostedProcess | None:
        """The process, loaded and recovered on first use; None when it cannot load."""
        process = self.processes.get(pid)
        if process is not None or pid in self.broken:
            return process
        try:
            record = self.logs.process_record(pid)
            spawn = self.logs.log_entry(pid, 0)
            if record is None or spawn is None:
                raise ModuleError(f"ModuleError: process {pid} has no spawn record")
            info = orjson.loads(record)
            module_id = info["module"]
            meta = self.modules.meta(module_id)
            if meta is None:
                raise ModuleError(f"ModuleError: module {module_id} is not in the store")
            limits = dataclasses.replace(
                self.config.limits,
                fuel=info.get("compute_limit", self.config.limits.fuel),
                memory=info.get("memory_limit", self.config.limits.memory),
            )
            process = HostedProcess(
                pid,
                self.store,
                self.modules.compiled(module_id),
                process_env(spawn, module_id, meta),
                limits,
                Evaluator(limits.fuel),
                self._checkpoint_taken,
                self.compute_clock,
                self.logs.log_range,
            )
            process.recover()
        except _HOST_FAULTS:
            raise
        except Exception as exc:
            self._break(pid, exc)
            return None
        self.processes[pid] = process
        return process

    def _break(self, pid: str, exc: Exception) -> None:
        """Isolate a process that cannot go on (its module will not instantiate, its checkpoint will
        not restore): its messages get Error results, and its neighbours on this worker never notice.
        Host faults (_HOST_FAULTS) are not the process's doing: they crash the worker instead, and
        its supervisor restarts it, so no Error result is ever stored for them."""
        log.error("worker %d: process %s cannot be evaluated: %s", self.config.index, pid, exc)
        self.broken[pid] = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
        self.processes.pop(pid, None)

    def _step(
        self, pid: str, step: Callable[[HostedProcess], list[tuple[int, bytes]]], out: list[tuple[bytes, bytes]]
    ) -> None:
        process = self.hosted(pid)
        if process is not None:
            try:
                ready = step(process)
            except _HOST_FAULTS:
                raise
            except Exception as exc:
                self._break(pid, exc)
            else:
                out.extend((log_key(pid, slot), result) for slot, result in ready)
                return
        # A broken process still answers every slot the log holds for it, once, with its Error.
        head = self.logs.last_slot(pid)
        first = self.broken_answered.get(pid)
        if first is None:
            done = self.store.last_slot("results", pid)
            first = 0 if done is None else done + 1
        last = -1 if head is None else head
        error = error_result(self.broken[pid])
        out.extend((log_key(pid, slot), error) for slot in range(first, last + 1))
        self.broken_answered[pid] = max(first, last + 1)

    def assign(self, items: list[bytes], out: list[tuple[bytes, bytes]]) -> None:
        for at in range(0, len(items), 2):
            key, message = bytes(items[at]), bytes(items[at + 1])
            pid, slot = split_key(key)
            process = self.processes.get(pid)
            if process is not None:  # the hot path: a loaded process takes its next slot
                try:
                    for ready, result in process.deliver(slot, message):
                        out.append((log_key(pid, ready), result))
                    continue
                except _HOST_FAULTS:
                    raise
                except Exception as exc:
                    self._break(pid, exc)
            elif pid in self.evicted:
                continue
            self._step(pid, functools.partial(HostedProcess.deliver, slot=slot, message=message), out)

    def wake(self, pids: list[bytes], out: list[tuple[bytes, bytes]]) -> None:
        """Catch up every named process whose log runs ahead of its results."""
        for raw in pids:
            pid = bytes(raw).decode()
            self.evicted.discard(pid)
            head = self.logs.last_slot(pid)
            if head is None:
                continue
            if pid not in self.processes:
                done = self.store.last_slot("results", pid)
                if done is not None and done >= head:
                    continue
            self._step(pid, functools.partial(HostedProcess.catch_up, last=head), out)

    def dry_run(self, items: list[bytes], out: list[tuple[bytes, bytes]]) -> list[bytes]:
        """Evaluate a read-only message on the state after every acknowledged message."""
        token, pid, message = bytes(items[0]), bytes(items[1]).decode(), bytes(items[2])
        self.wake([items[1]], out)
        process = self.hosted(pid)
        if process is None:
            return [token, error_result(self.broken[pid])]
        return [token, process.dry_run(message)]

    def digest(self, items: list[bytes], out: list[tuple[bytes, bytes]]) -> list[bytes]:
        """The SHA-256 of a process's memory and globals, after every acknowledged message; or, when
        asked for b"checkpoint", a checkpoint where it stands, answered with its slot (8 bytes,
        big-endian; -1 before any): the answer goes out after the commit, so a state read then
        streams the memory from the store and nothing large crosses the socket."""
        token, pid, what = bytes(items[0]), bytes(items[1]).decode(), bytes(items[2])
        self.wake([items[1]], out)
        process = self.hosted(pid)
        if process is None:
            return [token, b""]
        if what == b"checkpoint":
            process.checkpoint_now()
            return [token, (process.inbox.next_slot - 1).to_bytes(8, "big", signed=True)]
        return [token, process.instance.digest().encode()]

    def evict(self, items: list[bytes]) -> list[bytes]:
        """Let go of processes that move to another worker: checkpoint each where it stands (its
        new worker then replays little), and forget it. The caller commits before answering."""
        for raw in items:
            pid = bytes(raw).decode()
            self.evicted.add(pid)
            process = self.processes.pop(pid, None)
            if process is not None:
                try:
                    process.checkpoint_now()
                except _HOST_FAULTS:
                    raise
                except Exception:  # the new worker replays from the older checkpoint instead
                    log.exception("worker %d: could not checkpoint %s before it moves", self.config.index, pid)
            self.broken.pop(pid, None)
            self.broken_answered.pop(pid, None)
        return [bytes(raw) for raw in items]

    def commit(self, results: list[tuple[bytes, bytes]]) -> None:
        taken, self.checkpoints = self.checkpoints, []
        if not results and not taken:
            return
        def body(txn: lmdb.Transaction) -> None:
            self.store.put_results(txn, results)
            for pid, encoded in taken:
                checkpoints.put(txn, self.store, pid, encoded)

        self.store.write(body)


def run_worker(config: WorkerConfig) -> None:
    """The worker process's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the node, which sends STOP
    signal.signal(signal.SIGTERM, _terminate)
    die_with_parent(config.parent)  # an orphan worker would hold LMDB readers and evaluate for nobody
    start_heartbeat()  # a worker that stops (SIGSTOP) or wedges falls silent, and is replaced
    store = Store(config.data_path, metasync=False, map_size=config.map_size, max_map_size=config.max_map_size)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    runtime = Path(config.runtime)
    inbox = open_socket(context, zmq.PULL, worker_address(runtime, config.index), bind=False)
    feed = open_socket(context, zmq.PULL, feed_address(runtime, config.index), bind=True)
    outbox = open_socket(context, zmq.PUSH, results_address(runtime), bind=False)
    worker = Worker(config, store)
    outbox.send(pack(READY, [str(config.index).encode(), str(os.getpid()).encode()]))
    try:
        _serve(worker, [inbox, feed], outbox)
    finally:
        inbox.close(linger=0)
        feed.close(linger=0)
        outbox.close(linger=1000)
        context.term()
        worker.logs.close()
        store.close()


class _Lifecycle:
    """SIGTERM must not raise inside evaluation: Python runs signal handlers between bytecodes, and
    during aos that is inside a wasmtime host callback. So while a batch is being evaluated the
    handler only notes the request, and the loop exits after the batch is committed."""

    busy = False
    terminate = False


def _terminate(signum: int, frame: object) -> None:
    if _Lifecycle.busy:
        _Lifecycle.terminate = True
    else:
        sys.exit(0)  # waiting for frames: unwind now, closing sockets and the store


def _report(outbox: zmq.Socket[bytes], frame: bytes) -> None:
    """Send a frame to the node, waiting while it is slow to read, but not for a node that is gone:
    a SIGTERM (our parent died, or we are being stopped) ends the wait, and the worker exits."""
    while True:
        try:
            outbox.send(frame, zmq.NOBLOCK)
            return
        except zmq.Again:
            if _Lifecycle.terminate:
                raise SystemExit(0) from None
            outbox.poll(100, zmq.POLLOUT)


def _take(inboxes: list[zmq.Socket[bytes]], poller: zmq.Poller) -> list[bytes]:
    """Wait for frames, then take what waits, up to a commit's worth: the node's first (they are
    few: wakes, dry runs, evictions), then the shards' assignments."""
    frames: list[bytes] = []
    while not frames:
        poller.poll()
        for inbox in inboxes:
            while len(frames) < _MAX_FRAMES_PER_COMMIT:
                try:
                    frames.append(inbox.recv(zmq.NOBLOCK))
                except zmq.Again:
                    break
    return frames


def _serve(worker: Worker, inboxes: list[zmq.Socket[bytes]], outbox: zmq.Socket[bytes]) -> None:
    poller = zmq.Poller()
    for inbox in inboxes:
        poller.register(inbox, zmq.POLLIN)
    while True:
        frames = _take(inboxes, poller)
        _Lifecycle.busy = True
        results: list[tuple[bytes, bytes]] = []
        dry_replies: list[list[bytes]] = []
        evicted: list[bytes] = []
        stop = False
        for frame in frames:
            kind, items = unpack(frame)
            if kind == ASSIGN:
                worker.assign(items, results)
            elif kind == WAKE:
                worker.wake(items, results)
            elif kind == DIGEST:
                dry_replies.append(worker.digest(items, results))
            elif kind == DRY_RUN:
                dry_replies.append(worker.dry_run(items, results))
            elif kind == EVICT:
                evicted += worker.evict(items)
            elif kind == STOP:
                stop = True
            else:
                log.error("worker %d: unknown frame kind %r", worker.config.index, kind)
        worker.commit(results)
        if results:
            _report(outbox, pack(RESULTS, [part for pair in results for part in pair]))
        for reply in dry_replies:
            _report(outbox, pack(DRY_RESULT, reply))
        if evicted:  # after the commit: the new worker starts from what is stored
            _report(outbox, pack(EVICTED, evicted))
        _Lifecycle.busy = False
        if stop or _Lifecycle.terminate:
            return
