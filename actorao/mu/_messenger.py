"""The messenger: it cranks each result's outbox, delivering the messages a process sends to their
targets on this node, each exactly once.

Every outgoing message gets an id derived from (source process, slot, index), so a result cranked
twice (after a crash, a worker restart, a reopen) yields the same ids, and the SU assigns each id once:
at least once on this side plus deduplication on that side is exactly once. A message gets the tags
ao's MU adds: From-Process, From-Module and Pushed-For; its From is the sending process. A message
to a process this node does not have is kept in the ``undelivered`` sub-database, never dropped.
When the SU pushes back (Overloaded), outgoing messages wait, in order, and are offered again; past
``max_backlog`` waiting messages, cranking stops and results wait in the store instead (bounded by
disk, not memory), to be cranked once the backlog drains. One result may send at most
``max_per_result`` messages; the rest are kept undelivered, with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from actorao._config import DEFAULT_MAX_BACKLOG, DEFAULT_MAX_PER_RESULT
from actorao._exceptions import ActoraoError, InvalidMessage, NodeStopped
from actorao.message import (
    PUSHED_TAGS,
    Message,
    encode_id,
    is_id,
    normalize_tags,
    with_ao_tags,
)
from actorao.persist import ShardLogs, Store, log_key, split_key
from actorao.su import Schedulers
from actorao.supervisor import ThreadChild

log = logging.getLogger(__name__)

_FLUSH_EVERY = 0.05  # seconds between offers of a backlog to the SU, when nothing else happens
_FLUSH_BATCH = 8192  # messages offered at once
_SUBMIT_WAIT = 30.0  # seconds to wait for an offer's acknowledgement before offering it again
_NOTHING_SENT = (b'"Messages":[]', b'"Spawns":[]', b'"Assignments":[]')


def outgoing_id(process: str, slot: int, index: int) -> str:
    """The id of the ``index``-th message that ``process`` sent at ``slot``: the same every time."""
    return encode_id(hashlib.sha256(f"outbox|{process}|{slot}|{index}".encode()).digest())


class Messenger(ThreadChild):
    """Cranks outboxes from the results the workers report, on a thread of its own: the results
    listener only hands frames over (``offer``), so a slow crank never holds results back from their
    waiters. A supervised child of the node's root, like the SU and cron."""

    pid: int | None = None

    def __init__(
        self,
        store: Store,
        logs: ShardLogs,
        identity: str,
        scheduler: Callable[[], Schedulers],
        module_of: Callable[[str], str],
        max_data_bytes: int,
        spawn: Callable[[str, str, tuple[tuple[str, str], ...], str, tuple[tuple[str, str], ...]], None],
        assign: Callable[[str, str], object],
        *,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_per_result: int = DEFAULT_MAX_PER_RESULT,
    ) -> None:
        self.store = store  # results and undelivered messages
        self.logs = logs
        self.identity = identity
        self._scheduler = scheduler
        self._module_of = module_of
        self._max_data_bytes = max_data_bytes
        self._spawn = spawn
        self._assign = assign
        self._backlog: deque[list[Message]] = deque()
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # process -> highest slot whose outbox was cranked here
        self._max_backlog = max_backlog
        self._max_per_result = max_per_result
        self._waiting = 0  # messages in the backlog
        self._deferred: set[str] = set()  # processes whose results wait in the store to be cranked
        self._inbox: queue.SimpleQueue[tuple[str, list[Any]] | None] = queue.SimpleQueue()
        self._start_thread("mu")

    @property
    def backlog(self) -> int:
        """Messages waiting in memory to be pushed (results deferred to the store not counted)."""
        return self._waiting

    # -- as a supervised child ------------------------------------------------------------------
    def offer(self, items: list[bytes]) -> None:
        """Hand over a RESULTS frame's items; they are cranked on the messenger's thread."""
        self._inbox.put(("crank", items))

    def offer_recrank(self, pids: list[str]) -> None:
        """Ask for a recrank of ``pids``, done on the messenger's thread, in turn with the frames
        before it: one thread cranks, so each process's outbox goes out in slot order."""
        self._inbox.put(("recrank", pids))

    def _serve(self) -> None:
        while True:
            try:
                items = self._inbox.get(timeout=_FLUSH_EVERY)  # a frame, a recrank, or the end
            except queue.Empty:
                self.flush()
                continue
            if items is None:
                return
            kind, payload = items
            if kind == "crank":
                self.crank(payload)
            else:
                self.recrank(payload)

    def stop(self, timeout: float | None) -> None:
        """Crank what was handed over, then end. What is left is cranked again at the next open."""
        self._inbox.put(None)
        self._thread.join(timeout)

    # -- cranking -------------------------------------------------------------------------------
    def crank(self, items: list[bytes]) -> None:
        """Take a RESULTS frame's items (log key, result JSON, alternating) and send on their outboxes."""
        # Most results send nothing: for them this loop only notes each process's latest slot, once
        # per frame, so a frame of a thousand results costs little more than its outboxes.
        latest: dict[bytes, bytes] = {}
        sending: list[tuple[bytes, bytes]] = []
        for at in range(0, len(items), 2):
            key, result = items[at], items[at + 1]
            latest[key[:-8]] = key
            if not all(empty in result for empty in _NOTHING_SENT):
                sending.append((bytes(key), bytes(result)))
        held: set[str] = set()
        with self._lock:
            full = self._waiting >= self._max_backlog
            for key in latest.values():
                pid, slot = split_key(bytes(key))
                if full or pid in self._deferred:
                    # Backpressure: the SU is full and this much already waits. Leave the rest in the
                    # store, where recrank finds it once the backlog drains; nothing queues in memory.
                    self._deferred.add(pid)
                    held.add(pid)
                elif slot > self._seen.get(pid, -1):
                    self._seen[pid] = slot
        outgoing: list[Message] = []
        for key, result in sending:
            pid, slot = split_key(key)
            if pid not in held:
                outgoing += self._outgoing(pid, slot, orjson.loads(result))
        if outgoing:
            self._submit(outgoing)

    def recrank(self, pids: list[str]) -> None:
        """Crank again every stored result of ``pids`` after the last one cranked here (all of them,
        after a reopen): deduplication makes a second crank harmless."""
        for pid in pids:
            with self._lock:
                first = self._seen.get(pid, -1) + 1
            stored = self.store.slot_range("results", pid, first, (1 << 64) - 1)
            if stored:
                self.crank([part for slot, value in stored for part in (log_key(pid, slot), value)])

    def _outgoing(self, pid: str, slot: int, result: dict[str, Any]) -> list[Message]:
        if result.get("Error") is not None:
            return []  # a failed message was rolled back whole, its outbox with it
        entry = self.logs.log_entry(pid, slot)
        pushed_for = orjson.loads(entry)["Id"] if entry is not None else ""
        module = self._module_of(pid)
        out = self._spawns(pid, slot, module, pushed_for, result.get("Spawns") or [])
        self._assignments(pid, slot, result.get("Assignments") or [])
        sent = result.get("Messages") or []
        if len(sent) > self._max_per_result:  # a fan-out storm: the excess is kept, not queued
            for index in range(self._max_per_result, len(sent)):
                self._keep_undelivered(outgoing_id(pid, slot, index), pid, slot, index, sent[index],
                                       f"over the limit of {self._max_per_result} messages one result may send")
            sent = sent[: self._max_per_result]
        for index, raw in enumerate(sent):
            message_id = outgoing_id(pid, slot, index)
            try:
                message = self._build(message_id, pid, module, pushed_for, raw)
            except ActoraoError as exc:
                self._keep_undelivered(message_id, pid, slot, index, raw, str(exc))
                continue
            if not self._scheduler().knows(message.target):
                self._keep_undelivered(message_id, pid, slot, index, raw, f"no process {message.target} here")
                continue
            out.append(message)
        return out

    def _spawns(self, pid: str, slot: int, module: str, pushed_for: str, spawns: list[Any]) -> list[Message]:
        """Spawn each child (its id derived from parent, slot and index), and tell the parent, as ao
        does, with an Action=Spawned message from the child naming it."""
        notices = []
        for index, raw in enumerate(spawns):
            child = encode_id(hashlib.sha256(f"spawn|{pid}|{slot}|{index}".encode()).digest())
            pushed = (("From-Process", pid), ("From-Module", module), ("Pushed-For", pushed_for))
            try:
                if not isinstance(raw, dict):
                    raise InvalidMessage("Spawns[]", "each spawn must be an object")
                tags = tuple(pair for pair in normalize_tags(raw.get("Tags")) if pair[0] not in PUSHED_TAGS)
                child_module = next((value for name, value in tags if name == "Module"), "")
                data = raw.get("Data", "")
                self._spawn(child, child_module, tags, data if isinstance(data, str) else orjson.dumps(data).decode(),
                            pushed)
            except NodeStopped:
                continue  # closing: a recrank at the next open spawns it (once)
            except ActoraoError as exc:
                self._keep_undelivered(child, pid, slot, index, raw, f"spawn refused: {exc}")
                continue
            reference = next((value for name, value in tags if name == "Reference"), None)
            notice_tags = [("Action", "Spawned"), ("AO-Spawn-Success", "true"), ("Process", child)]
            if reference is not None:
                notice_tags.append(("Reference", reference))
            notice_tags += [("From-Process", child), ("From-Module", child_module), ("Pushed-For", pushed_for)]
            notice_id = encode_id(hashlib.sha256(f"spawned|{pid}|{slot}|{index}".encode()).digest())
            notices.append(Message(notice_id, self.identity, pid, with_ao_tags(notice_tags, "Message"), "",
                                   "", sender=child))
        return notices

    def _assignments(self, pid: str, slot: int, assignments: list[Any]) -> None:
        """Assign existing messages to further processes, as a result asked; each once per process."""
        for index, raw in enumerate(assignments):
            targets = raw.get("Processes") if isinstance(raw, dict) else None
            message_id = raw.get("Message") if isinstance(raw, dict) else None
            for target in targets if isinstance(targets, list) else []:
                try:
                    self._assign(str(target), str(message_id))
                except NodeStopped:
                    continue  # closing: a recrank at the next open assigns it (once)
                except ActoraoError as exc:
                    self._keep_undelivered(f"{message_id}|{target}", pid, slot, index, raw,
                                           f"assignment refused: {exc}")

    def _build(self, message_id: str, pid: str, module: str, pushed_for: str, raw: Any) -> Message:
        if not isinstance(raw, dict):
            raise InvalidMessage("Messages[]", "each sent message must be an object")
        target = raw.get("Target")
        if not is_id(target):
            raise InvalidMessage("Target", f"expected a 43-character process id, got {target!r:.60}")
        given = [pair for pair in normalize_tags(raw.get("Tags")) if pair[0] not in PUSHED_TAGS]
        tags = with_ao_tags(
            [*given, ("From-Process", pid), ("From-Module", module), ("Pushed-For", pushed_for)], "Message"
        )
        data = raw.get("Data", "")
        message = Message(message_id, self.identity, str(target), tags,
                          data if isinstance(data, str) else orjson.dumps(data).decode(),
                          str(raw.get("Anchor") or "")[:32], sender=pid)
        message.validate(self._max_data_bytes)
        return message

    def _keep_undelivered(self, message_id: str, pid: str, slot: int, index: int, raw: Any, why: str) -> None:
        log.warning("process %s slot %d: message %d not delivered: %s", pid, slot, index, why)
        record = orjson.dumps({"Id": message_id, "From-Process": pid, "Slot": slot, "Index": index,
                               "Reason": why, "Message": raw})
        self.store.put_undelivered(message_id, record)

    def _submit(self, outgoing: list[Message]) -> None:
        with self._lock:
            self._backlog.append(outgoing)
            self._waiting += len(outgoing)
        self.flush()

    def flush(self) -> None:
        """Offer what waits to the schedulers, oldest first, and wait for their answer, until they push
        back; once the backlog has drained, crank what was left in the store meanwhile. What is not
        acknowledged stays in the backlog and is offered again: its ids are the same every time, so a
        shard that did assign it before assigns nothing twice, and each target sees its messages in
        order."""
        while True:
            with self._lock:
                if not self._backlog:
                    deferred, self._deferred = self._deferred, set()
                    break
                taken: list[list[Message]] = []
                for entry in self._backlog:  # oldest first, a few thousand messages at a time
                    taken.append(entry)
                    if sum(len(batch) for batch in taken) >= _FLUSH_BATCH:
                        break
            try:
                self._scheduler().submit_many([m for batch in taken for m in batch]).result(_SUBMIT_WAIT)
            except ActoraoError as exc:  # pushed back, restarted or closing: offered again later
                log.debug("messenger: %d results' messages wait: %s", len(taken), exc)
                return
            with self._lock:
                for _ in taken:
                    self._waiting -= len(self._backlog.popleft())
        if deferred:
            self.recrank(sorted(deferred))

    # -- reading --------------------------------------------------------------------------------
    def undelivered(self) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self.store.undelivered()]
