"""A CU worker: one OS process hosting many AO processes, fed batches over ZeroMQ.

Two sockets feed it: the node's (wakes, dry runs, evictions, stop) and its feed, where the scheduler
shards push each commit's assignments straight to the worker of their processes, before the commit is
synced (``_ahead``). The main thread takes the frames that wait on either and queues each process's
work on a few evaluation threads (``_lanes``), one thread per process at a time; it writes what they
finish in one LMDB transaction once what it depends on is durable, then reports it in one frame. So
a message that burns its whole fuel holds up its own process only. A thread whose turn was the
worker's only work commits and reports it itself while the main thread waits on its sockets
(``_Direct``): one wake-up less on the way of a lone long message's result.

A process whose messages are small (they run with the GIL held, ``HostedProcess.held``) and that no
thread has work of is run by the main thread itself (``Worker.run_inline``): handing a turn to a thread
and taking it back costs lock rounds, an eventfd's write and read, and the GIL passed from thread to
thread and back. Such a turn ends, and a thread takes the rest, as soon as a message runs past
HELD_FUEL (a thread runs it again, released, from the state before it) or the turn's messages have
taken TURN_SECONDS of compute between them: the main thread is never away from its sockets for much
longer than one held message.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import gc
import logging
import operator
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import orjson
import zmq

from actorao import _cpus
from actorao._config import DEFAULT_MAX_MAP_SIZE, DEFAULT_WORKER_THREADS
from actorao.cu import _checkpoint as checkpoints
from actorao.cu._ahead import Ahead, AheadLogs, RemoteAheadLogs, by_process
from actorao.cu._lanes import Finished, Lanes, Op
from actorao.cu._modules import ModuleRegistry
from actorao.cu._process import HandOff, HostedProcess, Limits, broken_reason, load_process
from actorao.cu._remote import RemoteStore, ServiceClient, Shipper
from actorao.mailbox import (
    AHEAD,
    ASSIGN,
    DIGEST,
    DRY_RESULT,
    DRY_RUN,
    DURABLE,
    EVICT,
    EVICTED,
    QUIET_END,
    QUIET_RESULTS,
    READY,
    RESULTS,
    STOP,
    WAKE,
    ClusterKey,
    Guard,
    Transport,
    bound_address,
    feed_address,
    open_socket,
    pack,
    results_address,
    unpack,
    worker_address,
)
from actorao.persist import Store, log_key
from actorao.supervisor import die_with_parent, start_heartbeat
from actorao.vm import (
    HostResourceError,
    error_result,
)

log = logging.getLogger(__name__)

_MAX_FRAMES_PER_COMMIT = 64
_MAX_QUEUED = 16384  # assignments waiting for the evaluation threads: past this, frames wait in ZeroMQ
_MAX_QUEUED_PER_PROCESS = 1024  # past this, a process reads its assignments from the log instead
_COMMIT_EVERY = 256  # results the main thread's own turns finish before it commits them (as Lanes' _SIGNAL_AT)
_SHIP_ON_STOP = 10.0  # seconds a stopping remote worker gives its checkpoints to reach the node
_STOP_PATIENCE = 1.0  # seconds a STOP waits for a message in evaluation; a longer one is redone after
CATCH_UP = b"catch-up"  # a process's own op: read the log up to its head
FORGET = b"forget"  # a process's own op: drop its state, which took a push ahead that proved void
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
    threads: int = DEFAULT_WORKER_THREADS  # evaluation threads (``_lanes``)
    max_map_size: int = DEFAULT_MAX_MAP_SIZE
    # Where the node's sockets are ("": this run's ipc folder), and how to reach them: "ipc", or "tcp"
    # with the cluster key at ``key_path``, the feed then bound at ``host`` on a port the system picks.
    inbox: str = ""
    results: str = ""
    transport: str = "ipc"
    host: str = "127.0.0.1"
    key_path: str = ""
    # A Ray actor's worker: Ray owns the process (its signals, its end when the node goes), and the
    # feed binds at this machine's Ray address unless ``host`` names one.
    ray: bool = False
    # A remote worker (``_remote``): it reads the node's data from its data service at ``service``,
    # never from ``data_path``, and keeps its own store (checkpoints, compiled modules) at ``local_path``
    # (relative: in this machine's temporary folder).
    service: str = ""
    local_path: str = ""
    # NodeConfig.evaluation_cpus: the evaluation threads on these CPUs, every other thread on control_cpus
    evaluation_cpus: tuple[int, ...] = ()
    control_cpus: tuple[int, ...] = ()

    def to_json(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        doc = orjson.loads(text)
        doc["limits"] = Limits(**doc["limits"])
        for name in ("evaluation_cpus", "control_cpus"):
            doc[name] = tuple(doc.get(name, ()))
        return cls(**doc)


class Worker:
    """What a worker knows: its compiled modules and its hosted processes."""

    def __init__(
        self, config: WorkerConfig, store: Store, compute_clock: Callable[[], float] = time.perf_counter, *,
        logs: AheadLogs | RemoteAheadLogs | None = None, shipper: Shipper | None = None,
    ) -> None:
        self.config = config
        self.store = store  # results, checkpoints, modules
        # Read only; with the assignments pushed ahead of their commit (``_ahead``) read as if in it.
        self.logs = logs if logs is not None else AheadLogs(store, config.shards, map_size=config.map_size,
                                                            metasync=False)
        self.shipper = shipper  # a remote worker's: its checkpoints go to the node
        self.ahead = Ahead(self.logs)
        self.compute_clock = compute_clock  # drives the checkpoint_ms policy; a test fixes it
        # A remote worker keeps the machine code it compiles on its own disk: a restart there compiles nothing.
        self.modules = ModuleRegistry(store, keep_artifacts=bool(config.service))
        self.processes: dict[str, HostedProcess] = {}
        self.broken: dict[str, str] = {}  # process id -> why it cannot be evaluated
        self.broken_answered: dict[str, int] = {}  # process id -> next slot to answer with its Error
        self.checkpoints: list[tuple[str, checkpoints.Encoded]] = []  # taken since the last commit
        # Moved to another worker: a shard's assignments for them that were on their way here when
        # they left are dropped (they are in the log, which their new worker reads) until a WAKE
        # brings them back.
        self.evicted: set[str] = set()
        self._local = threading.local()

    def _checkpoint_taken(self, pid: str, encoded: checkpoints.Encoded) -> None:
        # Kept with the results of the thread's current turn (``run``), or for the next ``commit``.
        getattr(self._local, "checkpoints", self.checkpoints).append((pid, encoded))

    def hosted(self, pid: str) -> HostedProcess | None:
        """The process, loaded and recovered on first use; None when it cannot load."""
        process = self.processes.get(pid)
        if process is not None or pid in self.broken:
            return process
        try:
            process = load_process(pid, self.store, self.logs, self.modules, self.config.limits, self._checkpoint_taken,
                                   self.compute_clock)
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
        self.broken[pid] = broken_reason(exc)
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

    # -- one process's work: each runs on the thread that has the process's lane ----------------
    def deliver(self, pid: str, entries: list[tuple[int, bytes]], out: list[tuple[bytes, bytes]]) -> None:
        """Take assigned slots of ``pid``, (slot, message) in the order they came."""
        for index, (slot, message) in enumerate(entries):
            process = self.processes.get(pid)
            if process is not None:  # the hot path: a loaded process takes its next slot
                try:
                    for ready, result in process.deliver(slot, message):
                        out.append((log_key(pid, ready), result))
                    continue
                except HandOff as exc:
                    out.extend((log_key(pid, ready), result) for ready, result in exc.done)
                    exc.left.extend(entries[index + 1:])
                    raise
                except _HOST_FAULTS:
                    raise
                except Exception as exc:
                    self._break(pid, exc)
            elif pid in self.evicted:
                return
            self._step(pid, functools.partial(HostedProcess.deliver, slot=slot, message=message), out)

    def catch_up(self, pid: str, out: list[tuple[bytes, bytes]], *, woken: bool = True) -> None:
        """Evaluate what the log holds for ``pid`` beyond its results. A WAKE (``woken``) also brings
        back a process that was evicted; the worker's own catch-ups leave one alone."""
        if woken:
            self.evicted.discard(pid)
        elif pid in self.evicted:
            return
        head = self.logs.last_slot(pid)
        if head is None:
            return
        if pid not in self.processes:
            done = self.store.last_slot("results", pid)
            if done is not None and done >= head:
                return
        self._step(pid, functools.partial(HostedProcess.catch_up, last=head), out)

    def dry_run_one(self, pid: str, message: bytes, out: list[tuple[bytes, bytes]]) -> bytes:
        """Evaluate a read-only message on the state after every acknowledged message."""
        self.catch_up(pid, out)
        process = self.hosted(pid)
        if process is None:
            return error_result(self.broken[pid])
        return process.dry_run(message)

    def digest_one(self, pid: str, what: bytes, out: list[tuple[bytes, bytes]]) -> bytes:
        """The SHA-256 of a process's memory and globals, after every acknowledged message; or, when
        asked for b"checkpoint", a checkpoint where it stands, answered with its slot (8 bytes,
        big-endian; -1 before any): the answer goes out after the commit, so a state read then
        streams the memory from the store and nothing large crosses the socket."""
        self.catch_up(pid, out)
        process = self.hosted(pid)
        if process is None:
            return b""
        if what == b"checkpoint":
            process.checkpoint_now()
            return (process.inbox.next_slot - 1).to_bytes(8, "big", signed=True)
        return process.instance.digest().encode()

    def evict_one(self, pid: str) -> None:
        """Let go of a process that moves to another worker: checkpoint it where it stands (its new
        worker then replays little), and forget it. The caller commits before answering."""
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

    def run(self, pid: str, ops: list[Op]) -> Finished:
        """One turn of ``pid``'s queued work, on an evaluation thread: its results, the checkpoints
        taken meanwhile, and the replies to send once both are committed."""
        results: list[tuple[bytes, bytes]] = []
        replies: list[tuple[bytes, list[bytes]]] = []
        taken: list[tuple[str, checkpoints.Encoded]] = []
        self._local.checkpoints = taken
        forgot = False
        todo = iter(ops)
        try:
            for kind, payload in todo:
                if kind == FORGET:  # what it evaluated so far this turn rests on a void push: dropped
                    self.processes.pop(pid, None)
                    self.broken.pop(pid, None)
                    self.broken_answered.pop(pid, None)
                    results.clear()
                    taken.clear()
                    forgot = True
                elif kind == ASSIGN:
                    self.deliver(pid, payload, results)
                elif kind == WAKE:
                    self.catch_up(pid, results)
                elif kind == CATCH_UP:
                    self.catch_up(pid, results, woken=False)
                elif kind == DRY_RUN:
                    token, message = payload
                    replies.append((DRY_RESULT, [token, self.dry_run_one(pid, message, results)]))
                elif kind == DIGEST:
                    token, what = payload
                    replies.append((DRY_RESULT, [token, self.digest_one(pid, what, results)]))
                elif kind == EVICT:
                    self.evict_one(pid)
                    replies.append((EVICTED, [pid.encode()]))
        except HandOff as exc:  # only on the main thread (``run_inline``): the threads take the rest
            return Finished(results, taken, replies, pid, forgot, [(ASSIGN, exc.left), *todo])
        finally:
            del self._local.checkpoints
        return Finished(results, taken, replies, pid, forgot)

    def inline(self, pid: str, ops: list[Op]) -> bool:
        """Whether the main thread may run this turn itself: a loaded process whose messages run held
        (HELD_FUEL bounds how long each keeps the thread), taking assignments only; never when the
        evaluation has CPUs of its own (``evaluation_cpus``), which the main thread keeps off."""
        if self.config.evaluation_cpus:
            return False
        process = self.processes.get(pid)
        return process is not None and process.held > 0 and all(kind == ASSIGN for kind, _ in ops)

    def run_inline(self, pid: str, ops: list[Op]) -> Finished:
        """``run`` on the main thread, for a turn ``inline`` allows: no hand-over to an evaluation
        thread and back. A message that runs past HELD_FUEL, or the turn's TURN_SECONDS of compute, ends
        it there, and the rest is ``left``."""
        process = self.processes[pid]
        process.handing_off, process.turn_seconds = True, 0.0
        try:
            return self.run(pid, ops)
        finally:
            process.handing_off = False

    # -- whole frames, on the calling thread (tests drive a worker this way) ---------------------
    def assign(self, items: list[bytes], out: list[tuple[bytes, bytes]]) -> None:
        for pid, entries in by_process(items).items():
            self.deliver(pid, entries, out)

    def wake(self, pids: list[bytes], out: list[tuple[bytes, bytes]]) -> None:
        """Catch up every named process whose log runs ahead of its results."""
        for raw in pids:
            self.catch_up(bytes(raw).decode(), out)

    def dry_run(self, items: list[bytes], out: list[tuple[bytes, bytes]]) -> list[bytes]:
        token, pid, message = bytes(items[0]), bytes(items[1]).decode(), bytes(items[2])
        return [token, self.dry_run_one(pid, message, out)]

    def digest(self, items: list[bytes], out: list[tuple[bytes, bytes]]) -> list[bytes]:
        token, pid, what = bytes(items[0]), bytes(items[1]).decode(), bytes(items[2])
        return [token, self.digest_one(pid, what, out)]

    def evict(self, items: list[bytes]) -> list[bytes]:
        for raw in items:
            self.evict_one(bytes(raw).decode())
        return [bytes(raw) for raw in items]

    def commit(
        self, results: list[tuple[bytes, bytes]], taken: list[tuple[str, checkpoints.Encoded]] | None = None
    ) -> None:
        """Store results with the checkpoints taken with them (by default, those taken on the calling
        thread since the last commit) in one transaction of the computed environment, which is never
        synced: it is in the page cache for every reader when this returns (see persist/_computed.py)."""
        if taken is None:
            taken, self.checkpoints = self.checkpoints, []
        if not results and not taken:
            return

        def body(txn: lmdb.Transaction) -> None:
            self.store.put_results(txn, results)
            for pid, encoded in taken:
                checkpoints.put(txn, self.store, pid, encoded)

        self.store.computed.write(body)
        if taken and self.shipper is not None:
            self.shipper.ship(taken)


def run_worker(config: WorkerConfig, key: ClusterKey | None = None) -> None:
    """The worker process's entry point; ``key``, the cluster key, when it is not in a file here."""
    _cpus.pin(config.control_cpus)  # first: every thread started from here on starts there
    if not config.ray:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the node, which sends STOP
        signal.signal(signal.SIGTERM, _terminate)
        die_with_parent(config.parent)  # an orphan worker would hold LMDB readers and evaluate for nobody
        start_heartbeat()  # a worker that stops (SIGSTOP) or wedges falls silent, and is replaced
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    runtime = Path(config.runtime)
    transport = Transport(config.transport, config.host, config.key_path)
    key = key if key is not None else transport.key
    client: ServiceClient | None = None
    shipper: Shipper | None = None
    logs: RemoteAheadLogs | None = None
    if config.service:  # on another machine: the node's data comes over the network, into a store of its own
        if key is None:
            raise ValueError("a remote worker reaches the node's data service over TCP with the cluster key")
        client = ServiceClient(config.service, key)
        own = RemoteStore(Path(tempfile.gettempdir()) / config.local_path, client, metasync=False,
                          map_size=config.map_size, max_map_size=config.max_map_size)
        store: Store = own
        shipper, logs = Shipper(client, own), RemoteAheadLogs(client)
    else:
        store = Store(config.data_path, metasync=False, map_size=config.map_size, max_map_size=config.max_map_size)
    guard = Guard(context, key) if key is not None else None  # before the feed binds: only members connect
    inbox = open_socket(context, zmq.PULL, config.inbox or worker_address(runtime, config.index), bind=False,
                        curve=key)
    where = transport.any_port() if transport.tcp else feed_address(runtime, config.index)
    feed = open_socket(context, zmq.PULL, where, bind=True, curve=key)
    outbox = open_socket(context, zmq.PUSH, config.results or results_address(runtime), bind=False, curve=key)
    worker = Worker(config, store, logs=logs, shipper=shipper)
    direct = _Direct(worker, outbox)
    lanes = Lanes(worker.run, config.threads, direct=direct, cpus=config.evaluation_cpus)
    direct.wake = lanes.signal
    # What the worker holds from its start (imports, compiled modules) is frozen out of the
    # collector's full scans, as in a shard (su/_shard.py); the processes it loads are not. Every
    # turn leaves containers alive for a while (queued work, results held until DURABLE): collecting
    # young objects every 700 allocations walked them again and again, a third of a worker's CPU
    # with 10,000 processes. Young objects are collected every 20,000 allocations, as in a shard.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    outbox.send(pack(READY, [str(config.index).encode(), str(os.getpid()).encode(), bound_address(feed).encode()]))
    code = 1  # unless it ends as asked (a STOP, or SIGTERM's SystemExit)
    try:
        _serve(worker, [inbox, feed], outbox, lanes, direct)
        with direct.lock:  # the threads report nothing more of their own: what waits goes now
            direct.open = False
            direct.flush()
        if shipper is not None:  # what is still to ship goes, and the replies behind it
            for frame in shipper.close(_SHIP_ON_STOP):
                _report(outbox, frame)
            shipper = None
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code in (None, 0) else 1
        raise
    finally:
        with direct.lock:
            direct.open = False
        inbox.close(linger=0)
        feed.close(linger=0)
        outbox.close(linger=1000)
        if guard is not None:
            guard.stop()
        context.term()
        if not lanes.stop():
            # A thread is still in a message (a long one, or the worker is being stopped mid-way):
            # exit without closing the store under it. What it evaluates was never committed, and
            # is evaluated again from the log.
            logging.shutdown()
            os._exit(code)
        lanes.close()
        worker.logs.close()
        if shipper is not None:
            shipper.close(0)
        if client is not None:
            client.close()
        store.close()


class _Lifecycle:
    """SIGTERM must not raise inside a commit or a report. So while the main loop has work (in its
    hands, or on the evaluation threads) the handler only notes the request, and the loop exits
    after committing what is finished."""

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


def _take(inboxes: list[zmq.Socket[bytes]]) -> list[bytes]:
    """Take what waits, up to a commit's worth: the node's frames first (they are few: wakes, dry
    runs, evictions), then the shards' assignments."""
    frames: list[bytes] = []
    for inbox in inboxes:
        while len(frames) < _MAX_FRAMES_PER_COMMIT:
            try:
                frames.append(inbox.recv(zmq.NOBLOCK))
            except zmq.Again:
                break
    return frames


def _work_of(frames: list[bytes], lanes: Lanes, index: int, ahead: Ahead) -> tuple[dict[str, list[Op]], bool]:
    """Each process's ops in these frames, in order, and whether a STOP came. A process with
    _MAX_QUEUED_PER_PROCESS items waiting (its thread is in a long message) takes no more
    assignments: it reads them from the log when it gets there."""
    work: dict[str, list[Op]] = {}
    stop = False
    assigned = 0
    for frame in frames:
        kind, items = unpack(frame)
        if kind in (ASSIGN, AHEAD):
            if kind == AHEAD:
                took = ahead.took(bytes(items[0]), items[1:])
                if took is None:  # from a run of its shard that is gone: what it made durable is in the log
                    continue
                pushed, void = took
                for pid in void:
                    work.setdefault(pid, []).append((FORGET, None))
            else:
                pushed = by_process(items)
            for pid, entries in pushed.items():
                assigned += len(entries)
                ops = work.setdefault(pid, [])
                if ops and ops[-1][0] == ASSIGN:
                    ops[-1][1].extend(entries)
                else:  # a list of its own: a push's entries stay as they came (``Ahead`` reads them)
                    ops.append((ASSIGN, entries if kind == ASSIGN else [*entries]))
        elif kind == DURABLE:
            for pid in ahead.confirmed(bytes(items[0])):
                work.setdefault(pid, []).append((FORGET, None))
        elif kind in (WAKE, EVICT):
            for raw in items:
                work.setdefault(bytes(raw).decode(), []).append((kind, None))
        elif kind in (DRY_RUN, DIGEST):
            work.setdefault(bytes(items[1]).decode(), []).append((kind, (bytes(items[0]), bytes(items[2]))))
        elif kind == STOP:
            stop = True
        else:
            log.error("worker %d: unknown frame kind %r", index, kind)
    # Items waiting now are at most lanes.queued_items (the threads only take them away), so while that
    # and these frames' items stay under the cap no process can pass it, and none is looked up.
    if lanes.queued_items + assigned <= _MAX_QUEUED_PER_PROCESS:
        return work, stop
    for pid, (waiting, last) in lanes.queued(list(work)).items():
        ops = work[pid]
        if waiting + sum(len(payload) for kind, payload in ops if kind == ASSIGN) > _MAX_QUEUED_PER_PROCESS:
            trimmed: list[Op] = []
            for op in ops:
                if op[0] == ASSIGN:
                    op = (CATCH_UP, None)
                if op[0] == CATCH_UP and ((trimmed and trimmed[-1][0] == CATCH_UP) or (not trimmed and last == op)):
                    continue
                trimmed.append(op)
            ops[:] = trimmed
    return work, stop


def _serve(
    worker: Worker, inboxes: list[zmq.Socket[bytes]], outbox: zmq.Socket[bytes], lanes: Lanes, direct: _Direct
) -> None:
    """The main thread: take frames, queue each process's work on the lanes, and commit and report
    what they finish, as it finishes: a long message holds its own process only. Each round after the
    poll holds ``direct.lock``: meanwhile the threads hand what they finish to this thread."""
    everything, finishing = zmq.Poller(), zmq.Poller()
    for inbox in inboxes:
        everything.register(inbox, zmq.POLLIN)
    for poller in (everything, finishing):
        poller.register(lanes.fd, zmq.POLLIN)
        if worker.shipper is not None:
            poller.register(worker.shipper.fd, zmq.POLLIN)
    tick = max(1, round(lanes.stall * 1000))
    patience = max(1, round(worker.ahead.patience * 1000))
    stopping = False
    stopped_at = 0.0
    while True:
        busy = lanes.busy()
        _Lifecycle.busy = busy or bool(direct.unsent)  # a SIGTERM must not drop what a thread left to send
        # A stopping worker takes no more work, but still hears the DURABLEs its held results wait for.
        taking = (not stopping or worker.ahead.holding > 0) and lanes.queued_items < _MAX_QUEUED
        (everything if taking else finishing).poll(tick if busy else patience if worker.ahead.holding else None)
        with direct.lock:
            _Lifecycle.busy = True
            direct.flush()  # first: what a thread could not send yet goes before anything newer
            if taking:
                frames = _take(inboxes)
                if len(frames) < _MAX_FRAMES_PER_COMMIT:
                    worker.ahead.drained()
                if frames:
                    work, stop = _work_of(frames, lanes, worker.config.index, worker.ahead)
                    mine = {pid: work.pop(pid) for pid in [pid for pid, ops in work.items()
                                                           if worker.inline(pid, ops) and not lanes.has(pid)]}
                    lanes.submit(work)  # first: the threads go on with theirs while this one runs its own
                    _run_inline(worker, outbox, lanes, mine)
                    if stop and not stopping:
                        stopping, stopped_at = True, time.monotonic()
            lanes.nudge()
            if worker.ahead.holding:  # a DURABLE that may never come: its shard's log says
                forget = worker.ahead.check_logs()
                if forget:
                    lanes.submit({pid: [(FORGET, None)] for pid in forget})
            _commit_finished(worker, outbox, lanes)
            if worker.shipper is not None:  # replies that waited for their checkpoints to reach the node
                for frame in worker.shipper.take_ready():
                    _report(outbox, frame)
            if _Lifecycle.terminate or (stopping and lanes.only_long_turns(_STOP_PATIENCE) and (
                    not worker.ahead.holding or time.monotonic() - stopped_at >= worker.ahead.patience)):
                # What is still held then is in the log, or void: evaluated again after a start.
                return


def _run_inline(worker: Worker, outbox: zmq.Socket[bytes], lanes: Lanes, turns: dict[str, list[Op]]) -> None:
    """Run each of ``turns`` on this, the main thread, handing what a turn leaves to the threads. What
    they finish is committed and reported every _COMMIT_EVERY results, as the threads' own is: a pass
    over many frames' worth of turns holds no result back until its end."""
    finished = 0
    for pid, ops in turns.items():
        turn = worker.run_inline(pid, ops)
        lanes.finished_here(turn)
        if turn.left:
            lanes.submit({pid: turn.left})
        finished += len(turn.results)
        if finished >= _COMMIT_EVERY:
            finished = 0
            _commit_finished(worker, outbox, lanes)


def _commit_finished(worker: Worker, outbox: zmq.Socket[bytes], lanes: Lanes) -> None:
    """Commit and report what is finished and rests on durable assignments only."""
    ready = worker.ahead.settle(lanes.collect())
    if ready:
        _commit_and_report(worker, functools.partial(_report, outbox), ready)


class _Direct:
    """Commits and reports a turn on the evaluation thread that finished it, while the main thread is
    between rounds (each round holds ``lock``), so that the result goes out without waking it. It is
    offered a turn only when no earlier one waits to be collected (``Lanes``), and settles it as the
    main thread would (a turn on a push not yet durable is held in ``Ahead`` for the main thread to
    release): results keep their order. A frame the node is too slow to take at once waits in
    ``unsent``, and the main thread sends it first on its next round: frames leave in the order they
    were made, and no evaluation thread waits on the node."""

    def __init__(self, worker: Worker, outbox: zmq.Socket[bytes]) -> None:
        self.worker = worker
        self.outbox = outbox
        self.lock = threading.Lock()
        self.open = True  # False once the worker stops: its threads report nothing more
        self.unsent: collections.deque[bytes] = collections.deque()
        self.wake: Callable[[], None] = lambda: None  # wakes the main thread

    def __call__(self, turn: Finished) -> bool:
        if not self.lock.acquire(blocking=False):  # the main thread is at work: it collects the turn
            return False
        try:
            if not self.open:
                return False
            ready = self.worker.ahead.settle([turn])
            if ready:
                _commit_and_report(self.worker, self._send, ready)
            if self.worker.ahead.holding:  # the main thread releases it, or asks the log after patience
                self.wake()
            return True
        finally:
            self.lock.release()

    def _send(self, frame: bytes) -> None:
        if not self.unsent:
            try:
                self.outbox.send(frame, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
        self.unsent.append(frame)
        self.wake()

    def flush(self) -> None:
        """Send what waits; on the main thread, under ``lock``."""
        while self.unsent:
            _report(self.outbox, self.unsent[0])
            self.unsent.popleft()


_sends_nothing = operator.methodcaller("endswith", QUIET_END)


def _commit_and_report(worker: Worker, send: Callable[[bytes], None], finished: list[Finished]) -> None:
    results = [pair for turn in finished for pair in turn.results]
    worker.commit(results, [taken for turn in finished for taken in turn.checkpoints])
    if results:
        items = [part for pair in results for part in pair]
        if all(map(_sends_nothing, items[1::2])):
            # The node then notes each process's last slot as cranked, and skips every result's test.
            latest = {turn.results[-1][0][:-8]: turn.results[-1][0] for turn in finished if turn.results}
            send(pack(QUIET_RESULTS, [*items, b"".join(latest.values())]))
        else:
            send(pack(RESULTS, items))
    shipper = worker.shipper
    for turn in finished:  # after the commit: an evicted process's new worker starts from what is stored
        for kind, reply in turn.replies:
            frame = pack(kind, reply)
            if shipper is None or not shipper.after(frame):  # a remote worker's, once shipped to the node
                send(frame)
