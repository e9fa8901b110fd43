"""The CU pool, as the node sees it: worker OS processes under a supervisor, the sockets to them,
and where each AO process lives.

Placement is rendezvous hashing on (process id, worker index), bounded: a process goes to the first
worker in its own order that is below an even share, so loads end at most one apart. It is decided
when a process is first pushed or woken, and kept for the run; when the worker count changes, a
process stays unless its worker leaves or is over the new share. (A node that reopens places afresh:
every process starts from its checkpoint there anyway.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import zmq

from actorao._config import DEFAULT_MAX_MAP_SIZE, DEFAULT_WORKER_THREADS
from actorao._exceptions import ModuleError, NodeStopped, Overloaded, Timeout
from actorao.cu._process import Limits
from actorao.cu._ray import RayChild, raylet_for
from actorao.cu._service import DataService
from actorao.cu._worker import WorkerConfig
from actorao.mailbox import (
    ASSIGN,
    DIGEST,
    DRY_RESULT,
    DRY_RUN,
    EVICT,
    EVICTED,
    QUIET_RESULTS,
    READY,
    RESULTS,
    STOP,
    WAKE,
    Guard,
    Outlet,
    Transport,
    bound_address,
    listen,
    open_socket,
    results_address,
    unpack,
    worker_address,
)
from actorao.persist import ShardLogs, Store, split_key
from actorao.supervisor import ChildSpec, OSProcess, Supervisor, SupervisorChild

log = logging.getLogger(__name__)

IPC = Transport()

# A RESULTS frame's items (log key, result JSON, alternating), and for a frame of results that send
# nothing (QUIET_RESULTS), the last log key of each of its processes, joined; otherwise None.
ResultsHandler = Callable[[list[bytes], bytes | None], None]


class Holds(Protocol):
    """The scheduler shards, which push assignments to the workers: the pool holds a process in
    every shard before it moves it, and places it again after."""

    def hold(self, pids: list[str], timeout: float) -> None: ...

    def unhold(self, placements: dict[str, int], workers: int, timeout: float) -> None: ...

    def feeds(self, addresses: dict[int, tuple[str, int]]) -> None: ...
_POLL_MS = 50
_STOP_GRACE = 30.0
_ASK_AGAIN = 1.0  # seconds before a read-only question is asked again
HEARTBEAT_TIMEOUT = 3.0  # seconds of silence before a worker is taken as hung


class _PoolChild(SupervisorChild):
    """The pool supervisor as the root's child: stopping it tells the workers to finish first."""

    def __init__(self, pool: WorkerPool, supervisor: Supervisor) -> None:
        self.pool = pool
        super().__init__(supervisor)

    def stop(self, timeout: float | None) -> None:
        self.pool.stop_workers()


def ranking(pid: str, workers: int) -> list[int]:
    """Worker indexes in ``pid``'s rendezvous order: highest score first."""
    key = pid.encode()
    return sorted(range(workers), key=lambda index: hashlib.blake2b(key + bytes([index]), digest_size=8).digest(),
                  reverse=True)


def place(pid: str, workers: int) -> int:
    """The worker ``pid`` prefers: rendezvous hashing, highest score wins."""
    return 0 if workers == 1 else ranking(pid, workers)[0]


def place_bounded(pid: str, loads: list[int]) -> int:
    """The first worker in ``pid``'s rendezvous order that is below the even share once ``pid`` is
    counted: hashing alone puts 5 of 8 heavy processes on one of two workers as often as not, and
    that worker then bounds the node. Loads end at most one apart."""
    workers = len(loads)
    if workers == 1:
        return 0
    cap = -(-(sum(loads) + 1) // workers)  # ceil
    return next(index for index in ranking(pid, workers) if loads[index] < cap)


_WORKER_PREFIX = "worker-"  # a worker's child id in the supervision tree: worker-0, worker-1, ...


def _worker_id(index: int) -> str:
    return f"{_WORKER_PREFIX}{index}"


def worker_entries(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The CU workers in a node's supervision tree (``Node.tree()``): id, pid, restarts and state."""
    found = [tree] if str(tree.get("id", "")).startswith(_WORKER_PREFIX) else []
    return found + [entry for child in tree.get("children", ()) for entry in worker_entries(child)]


def _rebalanced(current: dict[str, int], workers: int) -> dict[str, int]:
    """A placement on ``workers`` that moves few processes: each stays where it is while its worker
    remains and is under the even share; the others are placed as new ones are."""
    cap = -(-len(current) // workers)
    loads = [0] * workers
    placement: dict[str, int] = {}
    for pid in sorted(current):
        index = current[pid]
        if index < workers and loads[index] < cap:
            placement[pid] = index
            loads[index] += 1
    for pid in sorted(current):
        if pid not in placement:
            index = place_bounded(pid, loads)
            placement[pid] = index
            loads[index] += 1
    return placement


class WorkerPool:
    """Starts, feeds and listens to the workers. ``on_results`` gets each RESULTS frame's items."""

    def __init__(
        self,
        data_path: Path,
        runtime: Path,
        workers: int,
        limits: Limits,
        map_size: int,
        shards: int,
        on_results: ResultsHandler,
        known_processes: Callable[[], Iterable[str]],
        *,
        on_worker_restart: Callable[[], object] | None = None,
        on_tick: Callable[[], object] | None = None,
        restart_intensity: tuple[int, float] = (10, 5.0),
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        transport: Transport = IPC,
        ray: bool = False,
        store: Store | None = None,
        logs: ShardLogs | None = None,
        ray_worker_path: str | None = None,
        threads: int = DEFAULT_WORKER_THREADS,
        cpus: tuple[frozenset[int], frozenset[int]] | None = None,
    ) -> None:
        self.data_path = data_path
        self.runtime = runtime
        self.workers = workers
        self.limits = limits
        self.map_size = map_size
        self.max_map_size = max_map_size
        self.shards = shards  # the scheduler shards whose logs the workers read
        self._on_results = on_results
        self._known_processes = known_processes
        self._on_worker_restart = on_worker_restart
        self._on_tick = on_tick
        self.transport = transport
        self.ray = ray  # workers are Ray actors (on TCP), placed by Ray
        self.ray_worker_path = ray_worker_path  # where they keep their own stores (None: their machine's temp)
        self.threads = threads  # each worker's evaluation threads
        # (evaluation, control) CPUs: the workers' evaluation threads on the one, their other threads on
        # the other (NodeConfig.evaluation_cpus); None: wherever the kernel puts them
        self.cpus: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()) if cpus is None else (
            tuple(sorted(cpus[0])), tuple(sorted(cpus[1])))
        if ray and not transport.tcp:
            raise ValueError("Ray-placed workers reach the node over TCP: give the pool a TCP transport")
        self._key = transport.key
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._guard = Guard(self._context, self._key) if self._key is not None else None
        self.inbox_addresses: list[str] = []  # where each worker takes the node's frames
        self._outlets = [self._bind_outlet(index) for index in range(workers)]
        self._results = open_socket(self._context, zmq.PULL, self._address(results_address(runtime)), bind=True,
                                    curve=self._key)
        self.results_address = bound_address(self._results)
        # Ray-placed workers may be on other machines: they read the node's data from its data service,
        # and keep their own store on their machine's disk (``_remote``).
        self.service: DataService | None = None
        if ray:
            if store is None or logs is None or self._key is None:
                raise ValueError("Ray-placed workers need the node's store and logs, for its data service")
            self.service = DataService(self._context, transport.any_port(), self._key, store, logs)
        # Where each worker takes the shards' pushes, as it said when it started, and its pid then.
        self.feed_addresses: dict[int, tuple[str, int]] = {}
        self._placement: dict[str, int] = {}
        self._loads = [0] * workers  # processes placed on each worker
        self._behind: list[set[str]] = [set() for _ in range(workers)]  # to WAKE: pushes dropped, moves
        self._route_lock = threading.RLock()
        self._scale_lock = threading.Lock()
        self._moving: dict[str, int] = {}  # process id -> its new worker, while its old one lets go
        self._evicting: dict[int, set[str]] = {}
        self._dry_runs: dict[bytes, Future[bytes]] = {}
        self._tokens = itertools.count()
        self._ready_workers: set[int] = set()
        self._ready_cond = threading.Condition()
        self._stopped = threading.Event()
        self.restart_intensity = restart_intensity
        self.holds: Holds | None = None  # the shards, once the node has them
        self.supervisor = self._new_supervisor()
        self._listener = threading.Thread(target=self._listen, name="cu-results", daemon=True)
        self._listener.start()

    def _address(self, ipc: str) -> str:
        return self.transport.any_port() if self.transport.tcp else ipc

    def _bind_outlet(self, index: int) -> Outlet:
        """The node's PUSH to worker ``index``, bound where that worker connects."""
        socket = open_socket(self._context, zmq.PUSH, self._address(worker_address(self.runtime, index)), bind=True,
                             curve=self._key)
        address = bound_address(socket)
        if index < len(self.inbox_addresses):
            self.inbox_addresses[index] = address
        else:
            self.inbox_addresses.append(address)
        return Outlet(socket)

    def _new_supervisor(self) -> Supervisor:
        intensity, period = self.restart_intensity
        return Supervisor(
            "cu-pool",
            [self._worker_spec()],
            strategy="simple_one_for_one",
            intensity=intensity,
            period=period,
            on_restart=self._worker_restarted,
        )

    def _worker_spec(self) -> ChildSpec:
        """The template of the pool's simple_one_for_one children: a worker, given its index."""

        def start(index: int) -> OSProcess | RayChild:
            config = WorkerConfig(
                index, str(self.data_path), str(self.runtime), self.limits, self.map_size, parent=os.getpid(),
                shards=self.shards, threads=self.threads, max_map_size=self.max_map_size,
                inbox=self.inbox_addresses[index], results=self.results_address, transport=self.transport.kind,
                host=self.transport.host,
                key_path=self.transport.key_path,
                evaluation_cpus=self.cpus[0], control_cpus=self.cpus[1],
            )
            if self.ray:
                assert self._key is not None and self.service is not None
                workers = worker_entries(self.supervisor.tree())
                before = next((w.get("machine") for w in workers if w["id"] == _worker_id(index)), None)
                # Not where this worker was, when there is a choice: that raylet may be the one just lost,
                # and Ray takes some seconds to say so.
                raylet = raylet_for(workers, avoid=before["ray_node"] if before else None)
                # Its own store on its machine: one per node (by its cluster key), Ray node and worker, so
                # several raylets on one machine act as several machines. Relative: in that machine's
                # temporary folder.
                own = (PurePosixPath(self.ray_worker_path or "") / "actorao-cu"
                       / hashlib.sha256(self._key.public).hexdigest()[:16] / raylet[:16] / f"worker-{index}")
                remote = dataclasses.replace(config, ray=True, host="", key_path="", data_path="",
                                             service=self.service.address, local_path=str(own))
                return RayChild(remote, self._key, raylet)
            return OSProcess.python_module("actorao.cu", config.to_json(), heartbeat=True)

        return ChildSpec(id="worker", start=start, shutdown=5.0, heartbeat_timeout=HEARTBEAT_TIMEOUT)

    # -- lifecycle ------------------------------------------------------------------------------
    def start_supervisor(self) -> SupervisorChild:
        """Start a fresh pool supervisor and its workers, as a child for the node's root supervisor
        (which calls this again if the pool gives up). Every process catches up from the log."""
        previous, self.supervisor = self.supervisor, self._new_supervisor()
        previous.stop()  # one that gave up has ended its thread; this closes what it still holds
        child = _PoolChild(self, self.supervisor)
        try:
            for index in range(self.workers):
                self.supervisor.start_child(index, child_id=_worker_id(index))
                self.wake_all(index)
        except BaseException:  # the workers started so far go too (a Ray actor would hold its CPU)
            self.stop_workers()
            raise
        return child

    def wait_ready(self, timeout: float = 60.0) -> None:
        with self._ready_cond:
            started = self._ready_cond.wait_for(lambda: len(self._ready_workers) == self.workers, timeout)
        if not started:
            raise NodeStopped(f"the CU workers did not start within {timeout} s (see the log above)")

    def stop_workers(self) -> None:
        """STOP to every worker: each finishes the frames queued before it, then exits; the
        supervisor then stops whatever has not."""
        def ask() -> bool:  # on the supervisor's thread: a worker that exits at once is not restarted
            return all([self._send_soon(outlet, STOP, [], seconds=1.0) for outlet in self._outlets])

        self.supervisor.stop(grace=_STOP_GRACE, ask=ask)

    def stop(self) -> None:
        """Close the pool's sockets and listener, once its workers are stopped."""
        self._stopped.set()
        self._listener.join()
        if self.service is not None:
            self.service.stop()
        for outlet in self._outlets:
            outlet.close()
        self._results.close(linger=0)
        if self._guard is not None:
            self._guard.stop()
        self._context.term()
        for future in list(self._dry_runs.values()):
            try:
                future.set_exception(NodeStopped("the node closed during a dry run"))
            except InvalidStateError:
                pass

    @property
    def failed(self) -> bool:
        return self.supervisor.failed

    @staticmethod
    def _send_soon(outlet: Outlet, kind: bytes, items: list[bytes], seconds: float = 5.0) -> bool:
        deadline = time.monotonic() + seconds
        while not outlet.send_nowait(kind, items):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _worker_restarted(self, child_id: str) -> None:
        index = int(child_id.rsplit("-", 1)[1])
        log.warning("worker %d restarted; its processes catch up from checkpoint plus log", index)
        if self._on_worker_restart is not None:
            self._on_worker_restart()
        self.wake_all(index)

    # -- placement and pushes -------------------------------------------------------------------
    def worker_of(self, pid: str) -> int:
        index = self._placement.get(pid)
        if index is None:
            with self._route_lock:  # dry runs ask from other threads: loads must count each once
                index = self._placement.get(pid)
                if index is None:
                    index = self._placement[pid] = place_bounded(pid, self._loads)
                    self._loads[index] += 1
        return index

    def placement_of(self, pid: str) -> int | None:
        """The worker of ``pid`` (placing it if new), or None while it moves between workers."""
        if pid in self._moving:
            return None
        return self.worker_of(pid)

    def push(self, items: list[bytes]) -> None:
        """Assignments a shard could not place: (log key, module JSON) items, alternating, each sent on
        to the worker of its process, one frame per worker: the worker evaluates them without reading
        the log.
        Entries of a process that is moving between workers are not sent: they are durable, and its
        new worker reads them from the log once its old one has let go of it."""
        with self._route_lock:  # placement, sends and evictions happen in one order
            frames: dict[int, list[bytes]] = {}
            pids: dict[int, set[str]] = {}
            for at in range(0, len(items), 2):
                key = items[at]
                pid = split_key(key)[0]
                if pid in self._moving:
                    continue
                index = self.worker_of(pid)
                frames.setdefault(index, []).extend((key, items[at + 1]))
                pids.setdefault(index, set()).add(pid)
            for index, frame in frames.items():
                if not self._outlets[index].send_nowait(ASSIGN, frame):
                    # Durable already: the worker reads these from the log once it can take a frame.
                    self._behind[index] |= pids[index]

    def wake_all(self, index: int) -> None:
        with self._route_lock:
            self._behind[index] |= {
                pid for pid in self._known_processes() if pid not in self._moving and self.worker_of(pid) == index
            }

    def _flush_behind(self) -> None:
        with self._route_lock:
            for index, pids in enumerate(self._behind):
                if pids and self._outlets[index].send_nowait(WAKE, [pid.encode() for pid in pids]):
                    pids.clear()

    # -- scaling --------------------------------------------------------------------------------
    def scale(self, workers: int, timeout: float = 60.0) -> None:
        """Grow or shrink the pool to ``workers`` while messages keep flowing.

        A process whose placement changes moves by checkpoint plus log: its old worker gets EVICT
        behind every frame already sent to it, evaluates those, checkpoints the process, commits and
        forgets it, and answers EVICTED; only then does its new worker get a WAKE and catch up from
        the checkpoint and the log. Meanwhile its new messages are acknowledged as ever, and wait in
        the log: every shard holds it (pushes nothing of it) from before the EVICT until it is placed
        on its new worker, just before that WAKE. So nothing is lost, and no slot is evaluated by two
        workers."""
        with self._scale_lock:
            before = self.workers
            if workers == before:
                return
            for index in range(before, workers):  # new workers first, ready before anything moves
                self._outlets.append(self._bind_outlet(index))
                self._behind.append(set())
                self.supervisor.start_child(index, child_id=_worker_id(index))
            with self._ready_cond:
                if not self._ready_cond.wait_for(lambda: set(range(workers)) <= self._ready_workers, timeout):
                    raise Timeout(f"new workers did not start within {timeout} s")
            with self._route_lock:
                leaving: dict[int, list[str]] = {}
                known = sorted(self._known_processes())
                current = {pid: self.worker_of(pid) for pid in known}
                placement = _rebalanced(current, workers)
                for pid in known:
                    old, new = current[pid], placement[pid]
                    if old != new:
                        leaving.setdefault(old, []).append(pid)
                        self._moving[pid] = new
                        self._behind[old].discard(pid)
                self.workers = workers
                self._placement = placement
                self._loads = [0] * workers
                for index in placement.values():
                    self._loads[index] += 1
                self._evicting = {index: set(pids) for index, pids in leaving.items()}
            moving = dict(self._moving)
            if self.holds is not None and moving:  # outside the route lock: the shards' answers may need it
                self.holds.hold(sorted(moving), timeout)
            for index, pids in leaving.items():
                if not self._send_soon(self._outlets[index], EVICT, [pid.encode() for pid in pids]):
                    raise Overloaded(f"worker {index} took no EVICT within 5 s")
            with self._ready_cond:
                if not self._ready_cond.wait_for(lambda: not any(self._evicting.values()), timeout):
                    raise Timeout(f"workers did not hand over their processes within {timeout} s")
            if self.holds is not None and moving:  # before the WAKE: what it reads, no shard pushes
                self.holds.unhold(moving, workers, timeout)
            with self._route_lock:
                for pid, new in self._moving.items():
                    self._behind[new].add(pid)
                self._moving.clear()
            for index in reversed(range(workers, before)):  # past the new count, now empty: last first, as popped
                self._send_soon(self._outlets[index], STOP, [], seconds=1.0)
                self.supervisor.terminate_child(_worker_id(index))
                with self._route_lock:
                    self._outlets.pop().close()
                    self._behind.pop()
                with self._ready_cond:
                    self._ready_workers.discard(index)
            log.info("the CU pool went from %d to %d workers", before, workers)

    def dry_run(self, pid: str, message: bytes, timeout: float) -> bytes:
        return self._ask(DRY_RUN, pid, message, timeout)

    def state_digest(self, pid: str, timeout: float) -> str:
        return self._ask(DIGEST, pid, b"", timeout).decode()

    def checkpoint(self, pid: str, timeout: float) -> int:
        """Have the process's worker checkpoint it after every message sent to it so far, and store
        that; returns the checkpoint's slot (-1: nothing evaluated yet)."""
        answer = self._ask(DIGEST, pid, b"checkpoint", timeout)
        if not answer:
            raise ModuleError(f"process {pid} cannot be loaded on its worker; see its results' Error")
        return int.from_bytes(answer, "big", signed=True)

    def _ask(self, kind: bytes, pid: str, message: bytes, timeout: float) -> bytes:
        """Ask the worker hosting ``pid`` something, after everything sent to it before. The question
        is read-only, so it is asked again each second until answered: a worker that died with it
        unanswered is restarted, and its successor answers."""
        token = str(next(self._tokens)).encode()
        future: Future[bytes] = Future()
        self._dry_runs[token] = future
        deadline = time.monotonic() + timeout
        try:
            while pid in self._moving and time.monotonic() < deadline:  # ask where it lands
                time.sleep(0.005)
            while True:
                self._outlets[self.worker_of(pid)].send_nowait(kind, [token, pid.encode(), message])
                left = deadline - time.monotonic()
                try:
                    return future.result(max(0.0, min(_ASK_AGAIN, left)))
                except TimeoutError:
                    if left <= _ASK_AGAIN:
                        raise Timeout(f"no worker answered about {pid} within {timeout} s") from None
        finally:
            self._dry_runs.pop(token, None)

    # -- results --------------------------------------------------------------------------------
    def _listen(self) -> None:
        listen(self._results, self._stopped, self._dispatch, self._between_frames, "results listener", _POLL_MS)

    def _between_frames(self) -> None:
        self._safely(self._flush_behind)
        if self._on_tick is not None:
            self._safely(self._on_tick)

    @staticmethod
    def _safely(step: Callable[..., object], *args: Any) -> None:
        """One step of the listener. A failure is logged and the listener goes on: without it no
        result would reach the node again. (Results themselves are safe in the store either way.)"""
        try:
            step(*args)
        except Exception:
            log.exception("the results listener's %s failed", getattr(step, "__name__", step))

    def _dispatch(self, frame: bytes) -> None:
        kind, items = unpack(frame)
        if kind in (RESULTS, QUIET_RESULTS):
            latest = items.pop() if kind == QUIET_RESULTS else None
            if self.service is not None:  # a remote worker's results are stored here, before anyone hears
                self.service.commit_results(items)
            self._on_results(items, latest)
        elif kind == DRY_RESULT:
            future = self._dry_runs.get(bytes(items[0]))
            if future is not None:
                try:
                    future.set_result(bytes(items[1]))
                except InvalidStateError:  # the caller gave up on it meanwhile
                    pass
        elif kind == EVICTED:
            with self._ready_cond:
                for pids in self._evicting.values():
                    pids.difference_update(bytes(item).decode() for item in items)
                self._ready_cond.notify_all()
        elif kind == READY:
            index = int(items[0])
            log.debug("worker %d ready as pid %s (node pid %d)", index, items[1].decode(), os.getpid())
            if len(items) > 2 and self.transport.tcp:  # a new feed (of a new pid): the shards connect to it
                feed = (bytes(items[2]).decode(), int(items[1]))
                self.feed_addresses[index] = feed
                if self.holds is not None:
                    self.holds.feeds({index: feed})
            with self._ready_cond:  # after the shards were told: a caller that waits for READY may push
                self._ready_workers.add(index)
                self._ready_cond.notify_all()
        else:
            log.error("unknown frame kind %r from a worker", kind)
