"""The embedding API, and the composition root: a Node builds the store, the CU pool, the SU, the
messenger and cron under one root supervisor from one ``NodeConfig``, and is the facade over them.

    with actorao.Node("./data") as node:
        pid = node.spawn(actorao.examples.wasm("counter"))
        ack = node.send(pid, {"Action": "Inc"})     # returns once the assignment is durable
        print(node.result(ack.id).output)            # "1"

The work lives in the rooms: the entrance (``mu.Entrance``) builds and checks what comes in, the SU
assigns it, the workers evaluate it, the rendezvous (``cu.Rendezvous``) hands results to whoever
waits, and ``reads`` answers questions about the log for the edge (HTTP, CLI, bench).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from actorao import _cpus, _gc
from actorao._config import NodeConfig
from actorao._exceptions import ActoraoError, InvalidMessage, NodeStopped, Overloaded, UnknownMessage, UnknownProcess
from actorao._future import Future
from actorao._reads import NodeReads
from actorao.ans104 import DataItem
from actorao.cu import (
    Limits,
    ModuleRegistry,
    Rendezvous,
    StoredMemory,
    Verification,
    WorkerPool,
    ray_connect,
    ray_module,
    verify_process,
    worker_entries,
)
from actorao.mailbox import KEY_FILE, Transport, runtime_dir
from actorao.message import Message, Result, TagsLike, new_id
from actorao.mu import Cron, Entrance, Messenger
from actorao.persist import ShardLogs, Store, existing_shards, log_key
from actorao.su import Ack, Schedulers, ShardConfig, handoff_problem, public_key_of
from actorao.supervisor import ChildSpec, OSProcess, Supervisor

log = logging.getLogger(__name__)

__all__ = ["Ack", "Node", "NodeConfig", "ProcessState", "StateStream"]

T = TypeVar("T")

SHARD_HEARTBEAT_TIMEOUT = 10.0  # seconds of silence before a scheduler shard is taken as hung
_VERIFY_TRIES = 20


def _transport(config: NodeConfig) -> Transport:
    """How the node reaches its workers: TCP if asked, or if Ray places them (maybe on other machines),
    with the cluster key, made on the first start and checked here, before anything opens."""
    if config.transport != "tcp" and config.ray is None:
        return Transport()
    host = config.transport_host
    if host is None:  # a Ray of the node's own has every worker here; a cluster's reach this machine
        host = ray_module().util.get_node_ip_address() if config.ray not in (None, "local") else "127.0.0.1"
    transport = Transport("tcp", host, str(config.path / KEY_FILE))
    config.path.mkdir(parents=True, exist_ok=True)
    try:
        transport.key  # noqa: B018
    except ValueError as exc:
        raise InvalidMessage("cluster key", str(exc)) from exc
    return transport


class Node:
    """An actorao node on one machine. Use it as a context manager, or call ``close()``.

    ``Node(config)`` takes a ``NodeConfig``; ``Node("./data", workers=2, max_backlog=10)`` is the
    same with the settings given by name."""

    def __init__(
        self, path: str | os.PathLike[str] | NodeConfig = ".actorao", workers: int | None = None, **settings: Any
    ) -> None:
        config = path if isinstance(path, NodeConfig) else NodeConfig(path=Path(path))
        if workers is not None:
            settings["workers"] = workers
        self.config = config = config.replace(**settings) if settings else config
        self.path = config.path
        self.workers = config.worker_count
        self._closed = False
        self._frozen = False  # whether this node froze the garbage collector's objects (actorao/_gc.py)
        self._close_lock = threading.Lock()
        self._lock_file = _lock_data_path(self.path)
        self._ray_joined = False  # whether this node joined Ray, and leaves it when it closes
        try:
            # (evaluation, control) CPUs, checked against this machine's before anything starts
            self._cpus = None if config.evaluation_cpus is None else (
                config.evaluation_cpus, _cpus.rest_of(config.evaluation_cpus))
            self._ray_joined = ray_connect(config.ray) if config.ray is not None else False  # before any worker
            self._transport = _transport(config)
        except BaseException:
            self._leave_ray()
            self._lock_file.close()
            raise
        # Every thread the node starts, and every process, starts on the control CPUs (when set); the
        # calling thread goes back where it was.
        with _cpus.pinned(self._cpus[1] if self._cpus is not None else ()):
            self._open(config)

    def _open(self, config: NodeConfig) -> None:
        """Open the stores, start the tree (pool, shards, messenger, cron) and wait for it."""
        shutil.rmtree(self.path / "run", ignore_errors=True)  # sockets of earlier runs, all dead now
        self._store = Store(self.path, map_size=config.map_size, max_map_size=config.max_map_size)
        # Opened before any worker: results and checkpoints a machine crash may have torn are dropped
        # here, and those of a store older than their environment moved into it.
        self._store.open_computed()
        # A data path keeps every shard it ever had: their logs hold processes.
        self._logs = ShardLogs(self._store, max(config.scheduler_count, existing_shards(self.path)),
                               map_size=config.map_size, max_map_size=config.max_map_size)
        self._logs.reader_check()  # readers left by processes of an earlier run that were killed
        self._logs.index_existing()  # the gateway's index, for stores written before it had one
        self.identity = self._store.identity(lambda: new_id(b"node identity"))
        self._runtime = runtime_dir(self.path, f"{os.getpid()}-{new_id()[:8]}")
        self._modules = ModuleRegistry(self._store, keep_artifacts=True)
        self._rendezvous = Rendezvous(self._store)
        self._modules_of: dict[str, str] = {}
        self._schedulers = Schedulers(self._logs, self._runtime, self.identity,
                                      lambda items: self._pool.push(items), clock=config.clock)
        self._messenger: Messenger | None = None
        self._cron: Cron | None = None
        self._entrance = Entrance(config, self._logs, self.identity, self._modules, self._scheduler)
        self.reads = NodeReads(self._store, self._logs, self.knows)
        self._rendezvous.subscribe(self._to_messenger)
        self._limits = Limits(config.compute_limit, config.memory_limit, config.checkpoint_every,
                              config.checkpoint_ms, config.checkpoint_full_every, config.max_sends_per_result,
                              config.max_spawns_per_result, config.max_result_bytes)
        self._pool = WorkerPool(
            self.path,
            self._runtime,
            self.workers,
            self._limits,
            config.map_size,
            self._logs.count,
            self._rendezvous.arrived,
            lambda: self._schedulers.processes,
            on_worker_restart=self._worker_restarted,
            restart_intensity=config.restart_intensity,
            max_map_size=config.max_map_size,
            transport=self._transport,
            ray=config.ray is not None,
            store=self._store,
            logs=self._logs,
            ray_worker_path=config.ray_worker_path,
            threads=config.worker_threads,
            cpus=self._cpus,
        )
        # The shards push each commit's assignments straight to the workers, where the pool places them.
        self._schedulers.placement = self._pool.placement_of
        self._pool.holds = self._schedulers
        # The root of the node's tree. The CU pool starts first (the SU pushes to it) and stops last
        # (the SU drains into it); each comes back alone if it dies, and past the root's own
        # intensity the node stops, and says so on every call.
        shards = [
            ChildSpec(f"su-{index}", functools.partial(self._start_shard, index), shutdown=60.0,
                      heartbeat_timeout=SHARD_HEARTBEAT_TIMEOUT)
            for index in range(self._logs.count)
        ]
        self._root = Supervisor(
            "node",
            [
                ChildSpec("cu-pool", self._pool.start_supervisor, type="supervisor"),
                *shards,
                ChildSpec("mu", self._start_mu, shutdown=60.0),
                ChildSpec("cron", self._start_cron, shutdown=5.0),
            ],
            intensity=2,
            period=60.0,
            on_restart=self._child_restarted,
        )
        try:
            self._root.start()
            self._pool.wait_ready()
            self._schedulers.wait_ready(range(self._logs.count), 60.0)
            self._finish_handoffs()
        except BaseException:
            self._root.stop()
            self._schedulers.close()
            self._pool.stop()
            self._logs.close()
            self._store.close()
            self._lock_file.close()
            self._leave_ray()
            raise
        for index in range(self.workers):  # whatever the log holds beyond the results gets evaluated
            self._pool.wake_all(index)
        self._recrank()  # outboxes a crash may have left unsent
        self._frozen = config.freeze_gc and _gc.freeze()

    @property
    def control_cpus(self) -> frozenset[int] | None:
        """Where every thread of the node but the evaluation threads runs, with ``evaluation_cpus`` set
        (None without): the CPUs the node could use when it opened, less those. A program that sends and
        waits one message at a time does best with its own thread here too:
        ``os.sched_setaffinity(0, node.control_cpus)``."""
        return None if self._cpus is None else self._cpus[1]

    # -- the children ---------------------------------------------------------------------------
    def _start_shard(self, index: int) -> OSProcess:
        config = ShardConfig(index, str(self.path), str(self._runtime), self.identity,
                             self._schedulers.addresses[index], self.config.map_size, self.config.max_pending,
                             os.getpid(), self.config.max_map_size, self._transport.kind, self._transport.key_path,
                             tuple(sorted(self._cpus[1])) if self._cpus is not None else ())
        return OSProcess.python_module("actorao.su", config.to_json(), heartbeat=True)

    def _child_restarted(self, child_id: str) -> None:
        if child_id.startswith("su-"):
            index = int(child_id.removeprefix("su-"))
            log.warning("scheduler shard %d restarted; it continues its processes' slots from its log", index)
            self._schedulers.restarted(index)
        elif child_id == "mu":  # what the dead messenger held in memory is in the results: crank it again
            log.warning("the messenger restarted; it cranks every stored result again (the SU deduplicates)")
            self._recrank()

    def _start_mu(self) -> Messenger:
        config = self.config
        messenger = Messenger(
            self._store, self._logs, self.identity, self._scheduler, self._module_of, config.max_data_bytes,
            self._entrance.spawn_pushed, self._entrance.assign, max_backlog=config.max_backlog,
        )
        self._messenger = messenger
        return messenger

    def _start_cron(self) -> Cron:
        self._cron = Cron(self._logs, self.identity, self._scheduler, lambda: self._scheduler().processes,
                          self.config.cron_catch_up, clock=self.config.clock)
        return self._cron

    def _to_messenger(self, items: list[bytes], latest: bytes | None) -> None:
        """Results go to the messenger running now (the root restarts it if it dies)."""
        messenger = self._messenger
        if messenger is not None:
            messenger.offer(items, latest)

    def _scheduler(self) -> Schedulers:
        return self._schedulers

    def _module_of(self, pid: str) -> str:
        module = self._modules_of.get(pid)
        if module is None:
            module = self._modules_of[pid] = str(self.process_info(pid)["module"])
        return module

    def _recrank(self) -> None:
        if self._messenger is not None:
            self._messenger.offer_recrank(self.processes())

    def _worker_restarted(self) -> None:
        """A worker died: clear its stale LMDB readers, and deliver from the store any result it
        committed but had not yet reported when it died."""
        self._logs.reader_check()
        self._rendezvous.deliver_stored()
        self._recrank()  # results it committed but never reported

    # -- lifecycle ------------------------------------------------------------------------------
    def _leave_ray(self) -> None:
        if self._ray_joined:
            self._ray_joined = False
            ray_module().shutdown()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop taking messages, assign what is queued, let workers finish, and close the store."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._root.stop()  # the shards drain what is queued, then the workers finish what they were sent
        self._schedulers.close()
        self._pool.stop()
        self._rendezvous.fail_all(NodeStopped("the node closed before the result arrived"))
        self._logs.close()
        self._store.close()
        shutil.rmtree(self._runtime, ignore_errors=True)
        self._lock_file.close()
        self._leave_ray()
        if self._frozen:
            _gc.thaw()

    def check_open(self) -> None:
        """Raise NodeStopped if the node is closed or its supervision tree gave up."""
        if self._closed:
            raise NodeStopped("the node is closed")
        if self._root.failed:
            raise NodeStopped("the node's supervision tree gave up (children crashed past their restart "
                              "intensity); see the log, then reopen")

    def _wait(self, future: Future[T], timeout: float | None) -> T:
        return future.result(self.config.timeout if timeout is None else timeout)

    # -- processes ------------------------------------------------------------------------------
    def processes(self) -> list[str]:
        return sorted(self._scheduler().processes)

    def knows(self, pid: str) -> bool:
        """Whether ``pid`` is a process of this node."""
        return self._scheduler().knows(pid)

    def _known(self, pid: str) -> None:
        self.check_open()
        if not self.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")

    def spawn(
        self, module: bytes | str, tags: TagsLike = None, data: str = "", *, module_format: str | None = None,
        module_tags: TagsLike = None, timeout: float | None = None,
    ) -> str:
        """Create a process running ``module`` (WASM bytes, WAT text, or a stored module's id).
        Returns the process id once its spawn message is durable at slot 0.

        ``module_format`` is ao's Module-Format (e.g. "wasm64-unknown-emscripten-draft_2024_02_15");
        new module bytes without one are recognised by their imports and memory. ``module_tags`` are
        stored with new module bytes, as an ao module's own tags. The process's limits are its
        ``Compute-Limit`` and ``Memory-Limit`` tags, else its module's, else the node's, and are stored
        with it: a node reopened with other defaults still replays it the same way."""
        self.check_open()
        future = self._entrance.spawn(module, tags, data, module_format, module_tags)
        return self._wait(future, timeout).process

    def process_info(self, pid: str) -> dict[str, Any]:
        """What the node keeps for a process: its module id and the limits fixed when it spawned."""
        record = self._logs.process_record(pid)
        if record is None:
            raise UnknownProcess(f"no process {pid} on this node")
        info: dict[str, Any] = orjson.loads(record)
        return info

    def add_module(self, module: DataItem | bytes, tags: TagsLike = None) -> str:
        """Store a module without spawning it; returns its id. A signed ``Type=Module`` item keeps its
        item id, owner and tags (as on Arweave); plain WASM bytes are stored under their SHA-256,
        with ``tags``. Adding the same module again changes nothing."""
        self.check_open()
        return self._entrance.add_module(module, tags)

    def add_data(self, data: DataItem | bytes, tags: TagsLike = None) -> str:
        """Store data that WeaveDrive serves to processes as ``/data/<id>``; returns its id. A signed
        item keeps its id, owner and tags; plain bytes are stored under their SHA-256. A process reads
        it once an Attestation of it is in its log (see actorao/cu/_drive.py)."""
        self.check_open()
        return self._entrance.add_data(data, tags)

    def module_info(self, module_id: str) -> dict[str, Any]:
        """A stored module's owner and tags."""
        found = self.reads.module(module_id)
        if found is None:
            raise UnknownMessage(f"no module {module_id} is stored on this node")
        return found[0]

    def state(self, pid: str, timeout: float | None = None) -> ProcessState:
        """The process's memory after every message acknowledged so far, with the slot and
        timestamp of the last one it evaluated: ``state_stream`` read whole."""
        stream = self.state_stream(pid, timeout)
        return ProcessState(b"".join(stream.chunks()), stream.slot, stream.timestamp, stream.block_height)

    def state_stream(self, pid: str, timeout: float | None = None) -> StateStream:
        """The process's memory after every message acknowledged so far, to be read in chunks: its
        worker checkpoints it where it stands, and the memory is then read from the stored
        checkpoint, never copied whole through the worker or held here."""
        self._known(pid)
        slot = self._pool.checkpoint(pid, self.config.timeout if timeout is None else timeout)
        if slot < 0:
            raise UnknownProcess(f"process {pid} has no evaluated state yet")
        stored = StoredMemory.newest(self._store, pid)
        if stored is None or stored.slot < slot:
            raise ActoraoError(f"process {pid}'s checkpoint at slot {slot} is not in the store")
        entry = self._logs.log_entry(pid, stored.slot)
        doc = orjson.loads(entry) if entry is not None else {}
        return StateStream(stored, stored.slot, stored.size, doc.get("Timestamp", 0), doc.get("Block-Height", 0))

    def state_digest(self, pid: str, timeout: float | None = None) -> str:
        """SHA-256 of the process's memory and globals after every message acknowledged so far: two
        nodes that evaluated the same log agree on it."""
        self._known(pid)
        return self._pool.state_digest(pid, self.config.timeout if timeout is None else timeout)

    def verify(self, pid: str, timeout: float | None = None) -> Verification:
        """Replay ``pid`` from its log in a fresh instance, with no checkpoint, and check every slot's
        hash-chain link, that each result equals the stored one, and that the final memory hash equals
        its worker's. ``.ok`` says whether all held; ``.first`` is the first slot that differs."""
        self._known(pid)
        for _ in range(_VERIFY_TRIES):  # the worker's hash must be the last replayed slot's: ask while the head holds
            last = self.catch_up(pid, timeout)
            digest = self.state_digest(pid, timeout)
            if self._logs.last_slot(pid) == last:
                break
        else:
            raise Overloaded(f"process {pid} took a message during each of {_VERIFY_TRIES} tries; verify it when "
                             "it is quieter")
        return verify_process(pid, self._store, self._logs, self._modules, self._limits, last, digest,
                              functools.partial(handoff_problem, stores=self._logs.stores))

    def scale(self, workers: int, timeout: float = 60.0) -> None:
        """Grow or shrink the CU pool to ``workers`` at run time. Processes whose worker changes move
        by checkpoint plus log replay; senders keep being acknowledged throughout, nothing is lost
        and nothing is evaluated twice."""
        self.check_open()
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise InvalidMessage("workers", f"must be a whole number of at least 1, got {workers!r}")
        self._pool.scale(workers, timeout)
        self.workers = workers

    def tree(self) -> dict[str, Any]:
        """The node's live supervision tree: each supervisor and child with its id, type, pid,
        restart count and state, workers under the CU pool."""
        return self._root.tree()

    @property
    def schedulers(self) -> list[str]:
        """The addresses of the node's scheduler shards: a spawn picks one with its ``Scheduler`` tag.
        The first is the node's own identity."""
        return list(self._schedulers.addresses)

    def rehost(self, pid: str, scheduler: str, timeout: float | None = None) -> int:
        """Move ``pid`` to the shard whose address is ``scheduler``; returns the first slot that shard
        assigns. Its old shard writes a signed hand-off record (the slot, and the head the hash chain
        continues from) and refuses the process's messages after it (Overloaded: send them again);
        the new shard stores the same record and continues the slots and the chain. Messages keep
        being acknowledged on either side of the hand-off, and a replay across it gives the same state."""
        self._known(pid)
        wait = self.config.timeout if timeout is None else timeout
        to = self._schedulers.shard_named(scheduler)
        old = self._schedulers.shard_of(pid)
        if old == to:
            return self.reads.latest(pid).slot + 1
        process_record = self._logs.stores[old].process_record(pid)
        assert process_record is not None, "a known process has its record in its shard"
        record = self._wait(self._schedulers.release(pid, to), wait)["record"]
        adopted = self._adopt(pid, to, record, process_record, wait)
        self._schedulers.rehosted(pid, to)
        log.info("process %s moved to scheduler %s from slot %d", pid, scheduler, adopted["slot"])
        return int(adopted["slot"])

    def _adopt(self, pid: str, to: int, record: str, process_record: bytes, wait: float) -> dict[str, Any]:
        """Shard ``to`` adopts a released process. Released, it is refused by its old shard: so a shard
        that restarted before it answered is asked again (adopting is idempotent), and a node that
        stops before it is adopted finishes the hand-off when it next opens (``_finish_handoffs``)."""
        for attempt in range(3):
            try:
                return self._wait(self._schedulers.adopt(to, record, process_record), wait)
            except Overloaded:
                if attempt == 2:
                    raise
                log.warning("scheduler shard %d restarted during the hand-off of %s; asking again", to, pid)
        raise AssertionError("unreachable")

    def _finish_handoffs(self) -> None:
        for pid, to, record, process_record in self._logs.unadopted():
            log.warning("process %s was released to scheduler shard %d and not adopted: adopting it now", pid, to)
            self._adopt(pid, to, record.decode(), process_record, self.config.timeout)

    def scheduler_keys(self) -> dict[str, str | None]:
        """Each shard's address and the Ed25519 public key that signs its log's attestations."""
        return {address: public_key_of(store) for address, store in zip(self._schedulers.addresses,
                                                                        self._logs.stores, strict=True)}

    def scheduler_of(self, pid: str) -> str:
        """The address of the shard that schedules ``pid``."""
        self._known(pid)
        return self._schedulers.addresses[self._schedulers.shard_of(pid)]

    def worker_processes(self) -> list[dict[str, Any]]:
        """The CU workers in the supervision tree: id (worker-N), OS pid, restarts and state."""
        return worker_entries(self.tree())

    def scheduler_processes(self) -> list[dict[str, Any]]:
        """The scheduler shards in the supervision tree: id (su-N), OS pid, restarts and state."""
        return [child for child in self.tree().get("children", ()) if str(child.get("id", "")).startswith("su-")]

    def worker_of(self, pid: str) -> int | None:
        """The index of the CU worker that hosts ``pid`` (worker-N), None while it is not placed."""
        return self._pool.placement_of(pid)

    def messenger_status(self) -> dict[str, int]:
        """The messenger's queues: messages waiting to be pushed (backlog), messages kept because
        their target is not on this node (undelivered), and processes cron ticks."""
        if self._messenger is None or self._cron is None:
            raise NodeStopped("the node has no running messenger")
        return {"backlog": self._messenger.backlog, "undelivered": len(self._messenger.undelivered()),
                "cron": self._cron.scheduled}

    def status(self) -> dict[str, Any]:
        """Counters for a status line or a status page: processes, assignments, evaluations, workers."""
        su = self._schedulers
        tree = self.tree()
        workers = worker_entries(tree)
        return {
            "address": self.identity,
            "processes": len(su.processes),
            "assigned": su.assigned,
            "commits": su.commits,
            "schedulers": su.count,
            "evaluated": self._rendezvous.evaluated,
            "workers": self.workers,
            "workers_running": sum(1 for entry in workers if entry.get("state") == "running"),
            "restarts": sum(int(entry.get("restarts", 0)) for entry in workers),
            "tree": tree,
        }

    @property
    def evaluated(self) -> int:
        """Results that reached the node since it opened."""
        return self._rendezvous.evaluated

    def undelivered(self) -> list[dict[str, Any]]:
        """Messages processes sent to targets this node does not have: kept, with the reason."""
        if self._messenger is None:
            raise NodeStopped("the node has no running messenger")
        return self._messenger.undelivered()

    # -- messages -------------------------------------------------------------------------------
    def send_nowait(self, pid: str, tags: TagsLike = None, data: str = "", *, anchor: str = "") -> Future[Ack]:
        """Send without waiting; ``.result(timeout)`` on the future gives the Ack once durable."""
        self.check_open()
        return self._entrance.send(pid, tags, data, anchor)

    def send(self, pid: str, tags: TagsLike = None, data: str = "", *, anchor: str = "",
             timeout: float | None = None) -> Ack:
        """Send one message; returns its Ack (id, process, slot, timestamp) once it is durable."""
        return self._wait(self.send_nowait(pid, tags, data, anchor=anchor), timeout)

    def send_many_nowait(self, messages: Iterable[tuple[str, TagsLike, str]]) -> Future[list[Ack]]:
        """Submit (pid, tags, data) triples without waiting; the future gives their Acks once all are
        durable. Every message is checked before any is submitted, so one bad message sends none.
        A caller keeps many batches in flight this way, and the node commits one while the next is
        being built."""
        self.check_open()
        return self._entrance.send_many(messages)

    def send_many(self, messages: Iterable[tuple[str, TagsLike, str]], *, timeout: float | None = None) -> list[Ack]:
        """Send (pid, tags, data) triples; returns their Acks once all are durable (one fsync for
        the lot, or a few). One bad message sends none. A batch whose processes live on several
        scheduler shards is committed by each shard on its own: if one refuses its part (Overloaded,
        say), the error's ``acks`` holds the Acks of what the others assigned, None for the rest."""
        return self._wait(self.send_many_nowait(messages), timeout)

    def post(self, message: Message, *, signed: bytes | None = None) -> Future[Ack]:
        """Submit a fully formed message, checked strictly; the future resolves once it is durable.
        ``signed`` is the data item it came in as, kept beside it in the log."""
        self.check_open()
        return self._entrance.post(message, signed=signed)

    def post_item(self, item: DataItem | bytes, *, verify: bool = True) -> Future[Ack] | str:
        """Take a signed ANS-104 data item, as AO's MU does: a ``Type=Message`` item is sent to its
        Target, a ``Type=Process`` item spawns a process (its id is the item's), and a
        ``Type=Module`` item stores a module (returned: its id, which Process items name). An item
        that is not an ao item (no ``Data-Protocol=ao``) is data for WeaveDrive (returned: its id).

        Messages and spawns give a future of their Ack, resolved once durable; the item is stored
        beside its assignment. With ``verify`` (the default) a bad signature raises SignatureError
        before anything is stored."""
        self.check_open()
        return self._entrance.post_item(item, verify=verify)

    def assign(self, pid: str, message_id: str, *, timeout: float | None = None) -> Ack:
        """Assign a message already on this node to one more process, once; returns its Ack there."""
        return self._wait(self.assign_nowait(pid, message_id), timeout)

    def assign_nowait(self, pid: str, message_id: str) -> Future[Ack]:
        self.check_open()
        return self._entrance.assign(pid, message_id)

    # -- results --------------------------------------------------------------------------------
    def watch_results(self, callback: Callable[[list[bytes]], None]) -> Callable[[], None]:
        """Call ``callback`` with the result keys (``result_key``) of results as they reach the node,
        on the node's listener thread: it must be quick and must not raise. Returns a function that
        stops the calls. For instruments such as ``actorao bench``'s latency probe."""
        return self._rendezvous.subscribe(lambda items, _: callback(items[0::2]))

    def result_key(self, message: str | Ack, process: str | None = None) -> bytes:
        """The result key (process ‖ slot) of ``message`` in ``process`` (default: where it was first
        assigned); UnknownMessage if it was not assigned there."""
        if isinstance(message, Ack):
            return log_key(message.process, message.slot)
        return self.reads.key_of(str(message), process)

    def result_nowait(self, message: str | Ack, process: str | None = None) -> Future[Result]:
        """A future of the Result of ``message`` (its id, or its Ack)."""
        self.check_open()
        return self._rendezvous.future(self.result_key(message, process))

    def result(self, message: str | Ack, timeout: float | None = None, *, process: str | None = None) -> Result:
        """The Result of ``message``, waiting up to ``timeout`` seconds for it to be evaluated. A
        message assigned to several processes has a result in each: ``process`` picks one."""
        return Result.from_json(self.raw_results([self.result_key(message, process)], timeout)[0])

    def results(self, messages: Sequence[str | Ack], timeout: float | None = None) -> list[Result]:
        """The Results of many messages, in order, with one wait for all of them."""
        raw = self.raw_results([self.result_key(message) for message in messages], timeout)
        return [Result.from_json(value) for value in raw]

    def raw_results(self, keys: list[bytes], timeout: float | None = None) -> list[bytes]:
        """The results at these result keys as the JSON the modules produced, waiting for them."""
        self.check_open()
        return self._rendezvous.wait(keys, self.config.timeout if timeout is None else timeout)

    def catch_up(self, pid: str, timeout: float | None = None) -> int:
        """Wait until every message assigned to ``pid`` so far has its result; returns the last slot.
        What a CU does before it answers for a process's latest state."""
        self._known(pid)
        head = self._logs.head(pid)
        if head is None:
            return -1
        self.raw_results([log_key(pid, head[0])], timeout)
        return head[0]

    def dry_run(
        self, pid: str, tags: TagsLike = None, data: str = "", *, owner: str | None = None,
        message_id: str | None = None, anchor: str = "", timeout: float | None = None,
    ) -> Result:
        """Evaluate a message on the process's current state without persisting anything. ``owner``
        (default: the node) and ``message_id`` are taken as given, unchecked: nothing is signed or
        stored, so a read-only message may claim any Owner, as AO's dry-run allows."""
        return Result.from_json(self.dry_run_raw(pid, tags, data, owner=owner, message_id=message_id,
                                                 anchor=anchor, timeout=timeout))

    def dry_run_raw(
        self, pid: str, tags: TagsLike = None, data: str = "", *, owner: str | None = None,
        message_id: str | None = None, anchor: str = "", timeout: float | None = None,
    ) -> bytes:
        """``dry_run``'s result as the JSON the module produced (what AO's HTTP API answers)."""
        self.check_open()
        body = self._entrance.dry_run_body(pid, tags, data, owner, message_id, anchor)
        return self._pool.dry_run(pid, body, self.config.timeout if timeout is None else timeout)


@dataclass(frozen=True, slots=True)
class ProcessState:
    """A process's linear memory, and the last slot evaluated into it."""

    memory: bytes
    slot: int
    timestamp: int
    block_height: int


@dataclass(frozen=True, slots=True)
class StateStream:
    """A process's memory at ``slot``, ``size`` bytes, read forward with ``chunks()``. Reading may
    raise ``ReplacedWhileRead`` when the process has moved far enough meanwhile that the checkpoint
    was pruned; read again then."""

    stored: StoredMemory
    slot: int
    size: int
    timestamp: int
    block_height: int

    def chunks(self, chunk: int = 1 << 20) -> Iterator[bytes]:
        return self.stored.chunks(chunk)


def _lock_data_path(path: Path) -> IO[str]:
    """Hold ``path`` for this node alone: two SUs on one log would hand out the same slots."""
    path.mkdir(parents=True, exist_ok=True)
    lock_file = open(path / "node.lock", "a+")  # noqa: SIM115 -- held open for the node's lifetime
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise ActoraoError(f"{path} is open in another node (process {holder}); close that one first") from None
    lock_file.truncate(0)
    lock_file.write(str(os.getpid()))
    lock_file.flush()
    return lock_file
