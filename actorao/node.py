"""The embedding API: a Node composes the SU, the CU worker pool and the store under one root.

    with actorao.Node("./data") as node:
        pid = node.spawn(actorao.examples.wasm("counter"))
        ack = node.send(pid, {"Action": "Inc"})     # returns once the assignment is durable
        print(node.result(ack.id).output)            # "1"
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import orjson
import pykka
import wasmtime

from actorao._exceptions import (
    ActoraoError,
    InvalidMessage,
    ModuleError,
    NodeStopped,
    Timeout,
    UnknownMessage,
    UnknownProcess,
)
from actorao.ans104 import DataItem
from actorao.cu import Limits, WorkerPool, module_format_of
from actorao.mailbox import runtime_dir
from actorao.message import (
    Message,
    Process,
    Result,
    TagsLike,
    check_contents,
    encode_id,
    is_id,
    module_json,
    new_id,
    normalize_tags,
    parse_compute_limit,
    parse_memory_limit,
    refuse_pushed_tags,
    tag_value,
    with_ao_tags,
)
from actorao.mu import Cron, Messenger, parse_interval
from actorao.mu._cron import DEFAULT_CATCH_UP
from actorao.mu._messenger import DEFAULT_MAX_BACKLOG, DEFAULT_MAX_PER_RESULT
from actorao.persist import DEFAULT_MAP_SIZE, Store, log_key
from actorao.su import Ack, ModuleRecord, SchedulerUnit
from actorao.supervisor import ChildSpec, Supervisor
from actorao.vm import (
    DEFAULT_FUEL,
    DEFAULT_MEMORY_LIMIT,
    CompiledModule,
    Instance,
    artifact_suffix,
    compile_module,
)

log = logging.getLogger(__name__)

__all__ = ["Ack", "Node", "ProcessState"]

DEFAULT_MAX_DATA_BYTES = 10 * 1024 * 1024
DEFAULT_CHECKPOINT_EVERY = 1000  # messages
DEFAULT_CHECKPOINT_MS = 1000.0  # or this much compute, whichever comes first
DEFAULT_CHECKPOINT_FULL_EVERY = 16  # deltas between full bases
DEFAULT_TIMEOUT = 30.0

_Future = pykka.ThreadingFuture


class Node:
    """An actorao node on one machine. Use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        path: str | os.PathLike[str] = ".actorao",
        workers: int | None = None,
        *,
        compute_limit: int = DEFAULT_FUEL,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
        checkpoint_ms: float = DEFAULT_CHECKPOINT_MS,
        checkpoint_full_every: int = DEFAULT_CHECKPOINT_FULL_EVERY,
        max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
        max_pending: int = 200_000,
        map_size: int = DEFAULT_MAP_SIZE,
        restart_intensity: tuple[int, float] = (10, 5.0),
        cron_catch_up: int = DEFAULT_CATCH_UP,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_sends_per_result: int = DEFAULT_MAX_PER_RESULT,
    ) -> None:
        workers = workers if workers is not None else (os.cpu_count() or 1)
        if workers < 1:
            raise InvalidMessage("workers", f"must be at least 1, got {workers}")
        self.path = Path(path)
        self.workers = workers
        self.max_data_bytes = max_data_bytes
        self.memory_limit = memory_limit
        self.compute_limit = compute_limit
        self._closed = False
        self.evaluated = 0  # results that reached the node since it opened
        self._watchers: list[Callable[[list[bytes]], None]] = []
        self._close_lock = threading.Lock()
        self._waiting: dict[bytes, list[_ResultWaiter]] = {}
        self._waiting_lock = threading.Lock()
        self._compiled: dict[str, CompiledModule] = {}
        self._lock_file = _lock_data_path(self.path)
        shutil.rmtree(self.path / "run", ignore_errors=True)  # sockets of earlier runs, all dead now
        self.store = Store(self.path, map_size=map_size)
        self.store.reader_check()  # readers left by processes of an earlier run that were killed
        self.identity = self._load_identity()
        self._runtime = runtime_dir(self.path, f"{os.getpid()}-{new_id()[:8]}")
        self._max_pending = max_pending
        self._cron_catch_up = cron_catch_up
        self.su: SchedulerUnit | None = None
        self.pool = WorkerPool(
            self.path,
            self._runtime,
            workers,
            Limits(compute_limit, memory_limit, checkpoint_every, checkpoint_ms, checkpoint_full_every),
            map_size,
            self._results_arrived,
            lambda: self.su.processes if self.su is not None else (),
            on_worker_restart=self._worker_restarted,
            restart_intensity=restart_intensity,
        )
        self._modules_of: dict[str, str] = {}
        self._messenger_options = (max_data_bytes, max_backlog, max_sends_per_result)
        self.messenger: Messenger | None = None
        # The root of the node's tree. The CU pool starts first (the SU pushes to it) and stops last
        # (the SU drains into it); each comes back alone if it dies, and past the root's own
        # intensity the node stops, and says so on every call.
        self.root = Supervisor(
            "node",
            [
                ChildSpec("cu-pool", self.pool.start_supervisor, type="supervisor"),
                ChildSpec("su", self._start_su, shutdown=60.0),
                ChildSpec("mu", self._start_mu, shutdown=60.0),
                ChildSpec("cron", self._start_cron, shutdown=5.0),
            ],
            intensity=2,
            period=60.0,
        )
        try:
            self.root.start()
            self.pool.wait_ready()
        except BaseException:
            self.root.stop()
            self.pool.stop()
            self.store.close()
            self._lock_file.close()
            raise
        for index in range(workers):  # whatever the log holds beyond the results gets evaluated
            self.pool.wake_all(index)
        self._recrank()  # outboxes a crash may have left unsent

    def _module_of(self, pid: str) -> str:
        module = self._modules_of.get(pid)
        if module is None:
            module = self._modules_of[pid] = str(self.process_info(pid)["module"])
        return module

    def undelivered(self) -> list[dict[str, Any]]:
        """Messages processes sent to targets this node does not have: kept, with the reason."""
        if self.messenger is None:
            raise NodeStopped("the node has no running messenger")
        return self.messenger.undelivered()

    def _recrank(self) -> None:
        if self.messenger is not None:
            self.messenger.offer_recrank(self.processes())

    def _start_mu(self) -> Messenger:
        max_data_bytes, max_backlog, max_per_result = self._messenger_options
        self.messenger = Messenger(
            self.store, self.identity, lambda: self.scheduler, self._module_of, max_data_bytes,
            self._spawn_pushed, self.assign_nowait, max_backlog=max_backlog, max_per_result=max_per_result,
        )
        return self.messenger

    def _start_cron(self) -> Cron:
        self.cron = Cron(self.store, self.identity, lambda: self.scheduler, self.processes, self._cron_catch_up)
        return self.cron

    def _start_su(self) -> SchedulerUnit:
        self.su = SchedulerUnit(self.store, self.pool.push, max_pending=self._max_pending)
        return self.su

    @property
    def scheduler(self) -> SchedulerUnit:
        su = self.su
        if su is None:
            raise NodeStopped("the node has no running SU")
        return su

    def state_digest(self, pid: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """SHA-256 of the process's memory and globals after every message acknowledged so far: two
        nodes that evaluated the same log agree on it."""
        self.check_open()
        if not self.scheduler.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")
        return self.pool.state_digest(pid, timeout)

    def scale(self, workers: int, timeout: float = 60.0) -> None:
        """Grow or shrink the CU pool to ``workers`` at run time. Processes whose worker changes move
        by checkpoint plus log replay; senders keep being acknowledged throughout, nothing is lost
        and nothing is evaluated twice."""
        self.check_open()
        if not isinstance(workers, int) or workers < 1:
            raise InvalidMessage("workers", f"must be a whole number of at least 1, got {workers!r}")
        self.pool.scale(workers, timeout)
        self.workers = workers

    def tree(self) -> dict[str, Any]:
        """The node's live supervision tree: each supervisor and child with its id, type, pid,
        restart count and state, workers under the CU pool."""
        return self.root.tree()

    def _load_identity(self) -> str:
        def body(txn: Any) -> str:
            existing = txn.get(b"identity", db=self.store.meta)
            if existing is not None:
                return bytes(existing).decode()
            identity = new_id(b"node identity")
            txn.put(b"identity", identity.encode(), db=self.store.meta)
            return identity

        return self.store.write(body)

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
        self.root.stop()  # the SU drains what is queued, then the workers finish what they were sent
        self.pool.stop()
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, {}
        for waiter in {id(w): w for waiters in waiting.values() for w in waiters}.values():
            waiter.fail(NodeStopped("the node closed before the result arrived"))
        self.store.close()
        shutil.rmtree(self._runtime, ignore_errors=True)
        self._lock_file.close()

    def check_open(self) -> None:
        """Raise NodeStopped if the node is closed or its supervision tree gave up."""
        if self._closed:
            raise NodeStopped("the node is closed")
        if self.root.failed:
            raise NodeStopped("the node's supervision tree gave up (children crashed past their restart "
                              "intensity); see the log, then reopen")

    # -- processes ------------------------------------------------------------------------------
    def processes(self) -> list[str]:
        return sorted(self.scheduler.processes)

    def spawn(
        self,
        module: bytes | str,
        tags: TagsLike = None,
        data: str = "",
        *,
        module_format: str | None = None,
        module_tags: TagsLike = None,
    ) -> str:
        """Create a process running ``module`` (WASM bytes, WAT text, or a stored module's id).
        Returns the process id once its spawn message is durable at slot 0.

        ``module_format`` is ao's Module-Format (e.g. "wasm64-unknown-emscripten-draft_2024_02_15");
        new module bytes without one are recognised by their imports and memory. ``module_tags`` are
        stored with new module bytes, as an ao module's own tags. The process's limits are its
        ``Compute-Limit`` and ``Memory-Limit`` tags, else its module's, else the node's, and are stored
        with it: a node reopened with other defaults still replays it the same way."""
        self.check_open()
        record, module_id = self._module_record(module, module_format, normalize_tags(module_tags, "module_tags"))
        process_id = new_id(self.identity.encode(), module_id.encode())
        ack: Ack = self._submit_spawn(process_id, module_id, record, normalize_tags(tags), data, ()).get()
        return ack.process

    def _submit_spawn(
        self,
        process_id: str,
        module_id: str,
        record: ModuleRecord | None,
        user_tags: tuple[tuple[str, str], ...],
        data: str,
        pushed: tuple[tuple[str, str], ...],
        *,
        signed: DataItem | None = None,
    ) -> _Future[Ack]:
        """Check and submit a spawn: from the API, from a process's result (with ``pushed`` tags), or
        from a signed Process item (whose tags are taken exactly as signed)."""
        compiled = self._compiled_module(module_id, record)
        for name, wanted in (("Module", module_id), ("Scheduler", self.identity)):
            given = tag_value(user_tags, name)
            if given is not None and given != wanted:
                raise InvalidMessage(f"Tags[{name!r}]", f"is set by the node to {wanted!r}, got {given!r}")
        if signed is not None:
            process = Process(process_id, signed.address, module_id, self.identity, user_tags, data,
                              signed.anchor_text)
        else:
            # aos trusts a message whose From is not its owner only when its pusher is an Authority:
            # the node pushes process-to-process messages, so it is one unless the spawner names others.
            defaults = (("Module", module_id), ("Scheduler", self.identity), ("Authority", self.identity))
            extra = tuple((n, v) for n, v in defaults if tag_value(user_tags, n) is None)
            process = Process(
                process_id, self.identity, module_id, self.identity,
                with_ao_tags(user_tags, "Process") + extra + pushed, data,
            )
        process.validate(self.max_data_bytes)
        interval = process.tag("Cron-Interval")
        if interval is not None:
            parse_interval(interval)
        meta = record.meta if record is not None else self.store.get("modules", module_id.encode())
        module_tag_list = normalize_tags(orjson.loads(meta or b"{}").get("tags"))
        compute = process.tag("Compute-Limit") or tag_value(module_tag_list, "Compute-Limit")
        memory = process.tag("Memory-Limit") or tag_value(module_tag_list, "Memory-Limit")
        limits = (
            parse_compute_limit(compute) if compute is not None else self.compute_limit,
            parse_memory_limit(memory) if memory is not None else self.memory_limit,
        )
        # Instantiate once here: a start function that traps, or an initial memory over the limit,
        # is refused now rather than turning every later message into an Error.
        Instance(compiled, memory_limit=limits[1], fuel=limits[0])
        return self.scheduler.submit(
            process, record, fresh_id=not pushed and signed is None, limits=limits,
            signed=signed.to_bytes() if signed is not None else None,
        )

    def _spawn_pushed(self, process_id: str, module_id: str, tags: tuple[tuple[str, str], ...], data: str,
                      pushed: tuple[tuple[str, str], ...]) -> None:
        """A spawn a process asked for, with its deterministic id (the SU spawns each id once)."""
        if not is_id(module_id) or self.store.get("modules", module_id.encode()) is None:
            raise InvalidMessage("Tags['Module']", f"no module {module_id!r:.60} is stored on this node")
        self._submit_spawn(process_id, module_id, None, tags, data, pushed)

    def assign(self, pid: str, message_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> Ack:
        """Assign a message already on this node to one more process, once; returns its Ack there."""
        self.check_open()
        ack: Ack = _get(self.assign_nowait(pid, message_id), timeout, "assignment")
        return ack

    def assign_nowait(self, pid: str, message_id: str) -> _Future[Ack]:
        if not self.scheduler.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")
        key = self.store.get("messages", str(message_id).encode())
        entry = self.store.get("log", key) if key is not None else None
        if entry is None:
            raise UnknownMessage(f"no message {message_id} was assigned on this node")
        doc = orjson.loads(entry)
        sender = doc["From"] if doc["From"] != doc["Owner"] else ""
        message = Message(doc["Id"], doc["Owner"], doc["Target"], normalize_tags(doc["Tags"]), doc["Data"],
                          doc["Anchor"], sender)
        return self.scheduler.submit_assignment(message, pid)

    def process_info(self, pid: str) -> dict[str, Any]:
        """What the node keeps for a process: its module id and the limits fixed when it spawned."""
        record = self.store.get("processes", pid.encode())
        if record is None:
            raise UnknownProcess(f"no process {pid} on this node")
        info: dict[str, Any] = orjson.loads(record)
        return info

    def _module_record(
        self, module: bytes | str, module_format: str | None, module_tags: tuple[tuple[str, str], ...],
        *, module_id: str | None = None, owner: str | None = None, signed_by: tuple[str, str] | None = None,
    ) -> tuple[ModuleRecord | None, str]:
        """The record to store for new module bytes (None for a stored module's id), and the id: the
        SHA-256 of the bytes, or ``module_id`` (a signed Module item's id)."""
        given_format = tag_value(module_tags, "Module-Format")
        if given_format is not None and module_format is not None and given_format != module_format:
            raise InvalidMessage("module_tags['Module-Format']", f"{given_format!r} contradicts {module_format!r}")
        module_format = module_format or given_format
        if isinstance(module, str):
            if is_id(module):
                if self.store.get("modules", module.encode()) is None:
                    raise InvalidMessage("module", f"no module with id {module} is stored on this node")
                if module_tags:
                    raise InvalidMessage("module_tags", "are stored with new module bytes, not given for a stored id")
                self._compiled_module(module, None, module_format)
                return None, module
            if not module.lstrip().startswith("(module"):
                raise InvalidMessage("module", "expected WASM bytes, WAT text or a stored module's id")
            try:
                module = bytes(wasmtime.wat2wasm(module))
            except wasmtime.WasmtimeError as exc:
                raise ModuleError(f"module: WAT does not parse: {exc}") from exc
        if not isinstance(module, (bytes, bytearray)):
            raise InvalidMessage("module", f"expected WASM bytes, WAT text or an id, got {type(module).__name__}")
        wasm = bytes(module)
        module_id = module_id or encode_id(hashlib.sha256(wasm).digest())
        compiled = self._compiled_module(module_id, wasm, module_format)
        defaults = (
            ("Data-Protocol", "ao"),
            ("Variant", "ao.TN.1"),
            ("Type", "Module"),
            ("Module-Format", compiled.format),
            ("Input-Encoding", "JSON-1"),
            ("Output-Encoding", "JSON-1"),
        )
        given = {name for name, _ in module_tags}
        # A signed module's tags are kept exactly as signed: they are what a gateway would answer.
        tags = module_tags if owner else tuple(pair for pair in defaults if pair[0] not in given) + module_tags
        for name, parse in (("Compute-Limit", parse_compute_limit), ("Memory-Limit", parse_memory_limit)):
            value = tag_value(tags, name)
            if value is not None:
                parse(value)
        meta: dict[str, Any] = {"owner": owner or self.identity,
                                "tags": [{"name": name, "value": value} for name, value in tags]}
        if signed_by is not None:
            meta["key"], meta["signature"] = signed_by
        return ModuleRecord(module_id, wasm, orjson.dumps(meta), (artifact_suffix(), compiled.serialize())), module_id

    def _compiled_module(
        self, module_id: str, source: ModuleRecord | bytes | None, module_format: str | None = None
    ) -> CompiledModule:
        """Compile each module once per node (checking it against its Module-Format), from bytes or
        from the store. A stored module compiled by an older wasmtime gets this one's artifact too."""
        compiled = self._compiled.get(module_id)
        if compiled is None:
            wasm = source.wasm if isinstance(source, ModuleRecord) else source
            if wasm is None:
                wasm = self.store.get("modules", module_id.encode() + b"/wasm")
                meta = self.store.get("modules", module_id.encode())
                if wasm is None or meta is None:
                    raise InvalidMessage("module", f"no module with id {module_id} is stored on this node")
                compiled = compile_module(wasm, module_format_of(meta))
                key, artifact = module_id.encode() + artifact_suffix(), compiled.serialize()
                self.store.write(lambda txn: txn.put(key, artifact, db=self.store.modules, overwrite=False))
            else:
                compiled = compile_module(wasm, module_format)
            self._compiled[module_id] = compiled
        if module_format is not None and compiled.format != module_format:
            raise ModuleError(f"module: {module_id} is stored as {compiled.format}, not {module_format}")
        return compiled

    # -- messages -------------------------------------------------------------------------------
    def _message(self, pid: str, tags: TagsLike, data: str, anchor: str) -> Message:
        if not is_id(pid):
            raise InvalidMessage("Target", f"expected a 43-character process id, got {pid!r:.60}")
        if not self.scheduler.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")
        # Id and Owner are minted here and the target was just checked, so only what the caller
        # gave is validated: the tags (normalised by with_ao_tags), the anchor and the data.
        message = Message(new_id(), self.identity, pid, with_ao_tags(tags, "Message"), data, anchor)
        check_contents(message.tags, anchor, data, "Message", self.max_data_bytes, tags_normalized=True)
        refuse_pushed_tags(message.tags)
        return message

    def post(self, message: Message, *, signed: bytes | None = None) -> _Future[Ack]:
        """Submit a fully formed message, checked strictly; the future resolves once it is durable.
        ``signed`` is the data item it came in as, kept beside it in the log."""
        self.check_open()
        if not isinstance(message, Message):
            raise InvalidMessage("message", f"expected a Message, got {type(message).__name__}")
        message.validate(self.max_data_bytes)
        refuse_pushed_tags(message.tags)
        if message.sender and message.sender != message.owner:
            raise InvalidMessage("From", "a message from outside is from its signer (Owner); only the node "
                                 "pushes messages from processes")
        return self.scheduler.submit(message, signed=signed)

    # -- signed data items ----------------------------------------------------------------------
    def post_item(self, item: DataItem | bytes, *, verify: bool = True) -> _Future[Ack] | str:
        """Take a signed ANS-104 data item, as AO's MU does: a ``Type=Message`` item is sent to its
        Target, a ``Type=Process`` item spawns a process (its id is the item's), and a
        ``Type=Module`` item stores a module (returned: its id, which Process items name).

        Messages and spawns give a future of their Ack, resolved once durable; the item is stored
        beside its assignment. With ``verify`` (the default) a bad signature raises SignatureError
        before anything is stored."""
        self.check_open()
        if not isinstance(item, DataItem):
            item = DataItem.parse(bytes(item))
        if verify:
            item.verify()
        kind = item.tag("Type")
        if kind == "Module":
            return self.add_module(item)
        if kind not in ("Message", "Process"):
            raise InvalidMessage("Tags['Type']", f"expected Message, Process or Module, got {kind!r}")
        data = _item_text(item)
        tags = item.tags
        refuse_pushed_tags(tags)
        if kind == "Process":
            if item.target_id:
                raise InvalidMessage("Target", "a Type=Process item has no target: the process is its own")
            module_id = tag_value(tags, "Module")
            if module_id is None or not is_id(module_id):
                raise InvalidMessage("Tags['Module']", f"a Process item names its module's id, got {module_id!r}")
            if self.store.get("modules", module_id.encode()) is None:
                raise InvalidMessage("Tags['Module']", f"no module {module_id} is stored on this node; "
                                     "post its Type=Module item first")
            if tag_value(tags, "Scheduler") is None:
                raise InvalidMessage("Tags['Scheduler']", f"missing; this node schedules as {self.identity}")
            return self._submit_spawn(item.id, module_id, None, tags, data, (), signed=item)
        if not item.target_id:
            raise InvalidMessage("Target", "a Type=Message item needs a target process")
        if not self.scheduler.knows(item.target_id):
            raise UnknownProcess(f"no process {item.target_id} on this node")
        message = Message(item.id, item.address, item.target_id, tags, data, item.anchor_text)
        return self.post(message, signed=item.to_bytes())

    def add_module(self, module: DataItem | bytes, tags: TagsLike = None) -> str:
        """Store a module without spawning it; returns its id. A signed ``Type=Module`` item keeps its
        item id, owner and tags (as on Arweave); plain WASM bytes are stored under their SHA-256,
        with ``tags``. Adding the same module again changes nothing."""
        self.check_open()
        if isinstance(module, DataItem):
            if tags is not None:
                raise InvalidMessage("tags", "a signed Module item carries its own tags")
            for name, wanted in (("Data-Protocol", "ao"), ("Type", "Module")):
                if module.tag(name) != wanted:
                    raise InvalidMessage(f"Tags[{name!r}]", f"a module item needs {name}={wanted}")
            record, module_id = self._module_record(
                module.data, None, module.tags, module_id=module.id, owner=module.address,
                signed_by=(encode_id(module.owner), encode_id(module.signature)))
            signed: bytes | None = module.to_bytes()
        else:
            record, module_id = self._module_record(bytes(module), None, normalize_tags(tags, "tags"))
            signed = None
        assert record is not None
        key, items = module_id.encode(), self.store.items

        def store(txn: Any) -> None:
            if txn.get(key, db=self.store.modules) is None:
                txn.put(key, record.meta, db=self.store.modules)
                txn.put(key + b"/wasm", record.wasm, db=self.store.modules)
                if signed is not None:
                    txn.put(key, signed, db=items)
            if record.compiled is not None:
                suffix, artifact = record.compiled
                txn.put(key + suffix, artifact, db=self.store.modules, overwrite=False)

        self.store.write(store)
        return module_id

    def module_info(self, module_id: str) -> dict[str, Any]:
        """A stored module's owner and tags."""
        meta = self.store.get("modules", module_id.encode()) if is_id(module_id) else None
        if meta is None:
            raise UnknownMessage(f"no module {module_id} is stored on this node")
        info: dict[str, Any] = orjson.loads(meta)
        return info

    def state(self, pid: str, timeout: float = DEFAULT_TIMEOUT) -> ProcessState:
        """The process's memory after every message acknowledged so far, with the slot and
        timestamp of the last one it evaluated."""
        self.check_open()
        if not self.scheduler.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")
        memory, slot = self.pool.state(pid, timeout)
        entry = self.store.get("log", log_key(pid, slot))
        doc = orjson.loads(entry) if entry is not None else {}
        return ProcessState(memory, slot, doc.get("Timestamp", 0), doc.get("Block-Height", 0))

    def send_nowait(self, pid: str, tags: TagsLike = None, data: str = "", *, anchor: str = "") -> _Future[Ack]:
        """Send without waiting; ``.get(timeout=...)`` on the future gives the Ack once durable."""
        self.check_open()
        return self.scheduler.submit(self._message(pid, tags, data, anchor), fresh_id=True)

    def send(self, pid: str, tags: TagsLike = None, data: str = "", *, anchor: str = "",
             timeout: float = DEFAULT_TIMEOUT) -> Ack:
        """Send one message; returns its Ack (id, process, slot, timestamp) once it is durable."""
        ack: Ack = _get(self.send_nowait(pid, tags, data, anchor=anchor), timeout, "assignment")
        return ack

    def send_many_nowait(self, messages: Iterable[tuple[str, TagsLike, str]]) -> _Future[list[Ack]]:
        """Submit (pid, tags, data) triples without waiting; the future gives their Acks once all are
        durable. Every message is checked before any is submitted, so one bad message sends none.
        A caller keeps many batches in flight this way, and the node commits one while the next is
        being built."""
        self.check_open()
        built = [self._message(pid, tags, data, "") for pid, tags, data in messages]
        return self.scheduler.submit_many(built, fresh_ids=True)

    def send_many(
        self, messages: Iterable[tuple[str, TagsLike, str]], *, timeout: float = DEFAULT_TIMEOUT
    ) -> list[Ack]:
        """Send (pid, tags, data) triples; returns their Acks once all are durable (one fsync for
        the lot, or a few). One bad message sends none."""
        acks: list[Ack] = _get(self.send_many_nowait(messages), timeout, "assignment")
        return acks

    # -- results --------------------------------------------------------------------------------
    def watch_results(self, callback: Callable[[list[bytes]], None]) -> Callable[[], None]:
        """Call ``callback`` with the log keys (process ‖ slot) of results as they reach the node, on
        the node's listener thread: it must be quick and must not raise. Returns a function that
        stops the calls. For instruments such as ``actorao bench``'s latency probe."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None

    def _results_arrived(self, items: list[bytes]) -> None:
        self.evaluated += len(items) // 2
        for watcher in self._watchers:
            watcher(items[0::2])
        with self._waiting_lock:
            waiting = self._waiting
            for at in range(0, len(items), 2):
                waiters = waiting.pop(bytes(items[at]), None)
                if waiters:
                    for waiter in waiters:
                        waiter.deliver(bytes(items[at]), bytes(items[at + 1]))
        if self.messenger is not None:
            self.messenger.offer(items)

    def result_key(self, message: str | Ack, process: str | None = None) -> bytes:
        """The log key (process ‖ slot) of ``message`` in ``process`` (default: where it was first
        assigned); UnknownMessage if it was not assigned there."""
        if isinstance(message, Ack):
            return log_key(message.process, message.slot)
        key = self.store.get("messages", str(message).encode())
        if key is not None and process is not None and key[:-8] != process.encode():
            key = self.store.get("messages", f"{message}|{process}".encode())  # assigned there too?
            if key is None:
                raise UnknownMessage(f"message {message} was not assigned to process {process}")
        if key is None:
            raise UnknownMessage(f"no message {message} was assigned on this node")
        return bytes(key)

    def _worker_restarted(self) -> None:
        """A worker died: clear its stale LMDB readers, and deliver from the store any result it
        committed but had not yet reported when it died."""
        self.store.reader_check()
        with self._waiting_lock:
            keys = list(self._waiting)
        self._deliver_stored(keys)
        self._recrank()  # results it committed but never reported

    def _deliver_stored(self, keys: Iterable[bytes]) -> None:
        results = self.store.results

        def stored(txn: Any) -> list[bytes]:
            found = ((key, txn.get(key, db=results)) for key in keys)
            return [part for key, value in found if value is not None for part in (key, bytes(value))]

        arrived = self.store.read(stored)
        if arrived:
            self._results_arrived(arrived)

    def _wait_for(self, keys: list[bytes], future: _Future[Result] | None = None) -> _ResultWaiter:
        """Register a waiter for ``keys``, then look in the store: registering first means a result
        arriving in between cannot slip past unseen."""
        self.check_open()
        waiter = _ResultWaiter(keys, future)
        with self._waiting_lock:
            for key in waiter.values:
                self._waiting.setdefault(key, []).append(waiter)
        self._deliver_stored(list(waiter.values))
        return waiter

    def _forget(self, waiter: _ResultWaiter) -> None:
        with self._waiting_lock:
            for key in waiter.values:
                waiters = self._waiting.get(key)
                if waiters and waiter in waiters:
                    waiters.remove(waiter)
                    if not waiters:
                        del self._waiting[key]

    def result_nowait(self, message: str | Ack, process: str | None = None) -> _Future[Result]:
        """A future of the Result of ``message`` (its id, or its Ack)."""
        future: _Future[Result] = pykka.ThreadingFuture()
        self._wait_for([self.result_key(message, process)], future)
        return future

    def result(self, message: str | Ack, timeout: float = DEFAULT_TIMEOUT, *, process: str | None = None) -> Result:
        """The Result of ``message``, waiting up to ``timeout`` seconds for it to be evaluated. A
        message assigned to several processes has a result in each: ``process`` picks one."""
        return Result.from_json(self.raw_results([self.result_key(message, process)], timeout)[0])

    def results(self, messages: Sequence[str | Ack], timeout: float = DEFAULT_TIMEOUT) -> list[Result]:
        """The Results of many messages, in order, with one wait for all of them."""
        raw = self.raw_results([self.result_key(message) for message in messages], timeout)
        return [Result.from_json(value) for value in raw]

    def catch_up(self, pid: str, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait until every message assigned to ``pid`` so far has its result; returns the last slot.
        What a CU does before it answers for a process's latest state."""
        if not self.scheduler.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")
        last = self.store.last_slot("log", pid)
        if last is None:
            return -1
        self.raw_results([log_key(pid, last)], timeout)
        return last

    def raw_results(self, keys: list[bytes], timeout: float = DEFAULT_TIMEOUT) -> list[bytes]:
        """The results at these log keys as the JSON the modules produced, waiting for them."""
        waiter = self._wait_for(keys)
        if not waiter.done.wait(timeout):
            self._forget(waiter)
            raise Timeout(f"{waiter.remaining} of {len(waiter.values)} results still missing after {timeout} s")
        if waiter.error is not None:
            raise waiter.error
        return [waiter.values[key] for key in keys]  # type: ignore[misc]

    def dry_run(
        self, pid: str, tags: TagsLike = None, data: str = "", *, owner: str | None = None,
        message_id: str | None = None, anchor: str = "", timeout: float = DEFAULT_TIMEOUT,
    ) -> Result:
        """Evaluate a message on the process's current state without persisting anything. ``owner``
        (default: the node) and ``message_id`` are taken as given, unchecked: nothing is signed or
        stored, so a read-only message may claim any Owner, as AO's dry-run allows."""
        return Result.from_json(self.dry_run_raw(pid, tags, data, owner=owner, message_id=message_id,
                                                 anchor=anchor, timeout=timeout))

    def dry_run_raw(
        self, pid: str, tags: TagsLike = None, data: str = "", *, owner: str | None = None,
        message_id: str | None = None, anchor: str = "", timeout: float = DEFAULT_TIMEOUT,
    ) -> bytes:
        """``dry_run``'s result as the JSON the module produced (what AO's HTTP API answers)."""
        self.check_open()
        message = self._message(pid, tags, data, anchor)
        for name, value in (("Owner", owner), ("Id", message_id)):
            if value is not None and (not isinstance(value, str) or len(value) > 256):
                raise InvalidMessage(name, f"must be text of at most 256 characters, got {value!r:.60}")
        if owner is not None or message_id is not None:
            message = replace(message, id=message_id or message.id, owner=owner or message.owner)
        body = module_json(message, None, timestamp=self.scheduler.head_timestamp(pid))
        return self.pool.dry_run(pid, body, timeout)


@dataclass(frozen=True, slots=True)
class ProcessState:
    """A process's linear memory, and the last slot evaluated into it."""

    memory: bytes
    slot: int
    timestamp: int
    block_height: int


def _item_text(item: DataItem) -> str:
    try:
        return item.data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidMessage("Data", f"not UTF-8 text (byte {exc.start}); this node hands Data to modules "
                             "as text") from None


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


class _ResultWaiter:
    """Waits for the results of a set of log keys with one event. ``deliver`` is called under the
    node's waiting lock, so its counting needs no lock of its own."""

    __slots__ = ("done", "error", "future", "remaining", "values")

    def __init__(self, keys: list[bytes], future: _Future[Result] | None) -> None:
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
                if self.future is not None:
                    self.future.set(Result.from_json(value))

    def fail(self, error: ActoraoError) -> None:
        self.error = error
        self.done.set()
        if self.future is not None:
            self.future.set_exception((type(error), error, None))


def _get(future: _Future[Any], timeout: float, what: str) -> Any:
    try:
        return future.get(timeout=timeout)
    except pykka.Timeout:
        raise Timeout(f"no {what} within {timeout} s") from None
