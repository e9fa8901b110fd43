"""The messenger: it cranks each result's outbox, delivering the messages a process sends to their
targets on this node, each exactly once.

Every outgoing message gets an id derived from (source process, slot, index), so a result cranked
twice (after a crash, a worker restart, a reopen) yields the same ids, and the SU assigns each id once:
at least once on this side plus deduplication on that side is exactly once. A message gets the tags
ao's MU adds: From-Process, From-Module and Pushed-For; its From is the sending process. A message
to a process this node does not have is kept in the ``undelivered`` sub-database, never dropped;
what one crank or one round refuses is written in one transaction.

What a result asks for (messages, spawns, assignments) waits in a queue per sending process, in outbox
order, and is offered to the SU in rounds: each round takes up to ``_SHARE`` from every sending process
in turn, so one process's huge outbox delays another's message by at most a round or two, never by the
whole outbox. Whatever the SU pushes back (Overloaded), messages, spawns and assignments alike, stays
at the head of its queue and is offered again; only a refusal that would be the same next time (the
target or the module is unknown, the spawn is invalid) is kept undelivered, with the reason. Past
``max_backlog`` waiting items, cranking stops and results wait in the store instead (bounded by disk,
not memory), to be cranked once the backlog drains. How much one result may ask for is bounded where
it is evaluated (``max_sends_per_result``, ``max_spawns_per_result``, ``max_result_bytes``): over
that, its result is an Error.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import orjson

from actorao._config import DEFAULT_MAX_BACKLOG
from actorao._exceptions import ActoraoError, InvalidMessage, NodeStopped, Overloaded, Timeout
from actorao.mailbox import QUIET_END
from actorao.message import (
    PUSHED_TAGS,
    Message,
    encode_id,
    is_id,
    normalize_tags,
    with_ao_tags,
)
from actorao.persist import ShardLogs, Store, log_key, split_key
from actorao.su import Ack, Schedulers
from actorao.supervisor import ThreadChild

log = logging.getLogger(__name__)

_FLUSH_EVERY = 0.05  # seconds between offers of a backlog to the SU, when nothing else happens
_FLUSH_BATCH = 8192  # items offered in one round, across every sending process
_SHARE = 512  # items one sending process offers in one round
_FRAMES_PER_ROUND = 64  # results frames cranked between two rounds
_SUBMIT_WAIT = 30.0  # seconds to wait for an offer's acknowledgement before offering it again
_NOTHING_SENT = (b'"Messages":[]', b'"Spawns":[]', b'"Assignments":[]')
_KEY_SIZE = len(log_key(encode_id(bytes(32)), 0))  # a process id's 43 characters, then the slot's 8 bytes
# The SU could not take it now; the same offer later may well succeed.
_TRY_AGAIN = (Overloaded, NodeStopped, Timeout, FutureTimeout)

Spawn = Callable[[str, str, tuple[tuple[str, str], ...], str, tuple[tuple[str, str], ...]], "Future[Ack]"]


def outgoing_id(process: str, slot: int, index: int) -> str:
    """The id of the ``index``-th message that ``process`` sent at ``slot``: the same every time."""
    return encode_id(hashlib.sha256(f"outbox|{process}|{slot}|{index}".encode()).digest())


@dataclass(slots=True)
class _Item:
    """One thing a result asks for, in outbox order: a message to submit, or a spawn or an assignment
    (``act`` submits it), with the message that follows once it is done (a spawn's Spawned notice).
    ``key``, ``where`` and ``raw`` are what is kept if it is refused."""

    key: str
    where: tuple[str, int, int]  # (sending process, slot, index)
    raw: Any
    message: Message | None = None
    act: Callable[[], Future[Any]] | None = None
    then: Message | None = None
    what: str = ""  # "spawn" or "assignment", for the reason of a refusal
    done: bool = False  # taken by the SU or refused for good: it leaves the queue once at its head


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
        spawn: Spawn,
        assign: Callable[[str, str], Future[Ack]],
        *,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
    ) -> None:
        self.store = store  # results and undelivered messages
        self.logs = logs
        self.identity = identity
        self._scheduler = scheduler
        self._module_of = module_of
        self._max_data_bytes = max_data_bytes
        self._spawn = spawn
        self._assign = assign
        self._queues: dict[str, deque[_Item]] = {}  # sending process -> what waits, in outbox order
        self._turns: deque[str] = deque()  # sending processes with something waiting, in round order
        self._refused: list[tuple[str, bytes]] = []  # undelivered records, written once per crank or round
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # process -> highest slot whose outbox was cranked here
        self._max_backlog = max_backlog
        self._waiting = 0  # items in the queues
        self._deferred: set[str] = set()  # processes whose results wait in the store to be cranked
        self._inbox: queue.SimpleQueue[tuple[str, list[Any]] | None] = queue.SimpleQueue()
        self._unfinished = 0  # frames and recranks handed to the thread, not yet done (changed under _count_lock)
        self.quiet_frames = 0  # frames that sent nothing, noted on the listener's thread
        self._count_lock = threading.Lock()  # not _lock: a frame that sends goes over without waiting on a crank
        self._start_thread("mu")

    @property
    def backlog(self) -> int:
        """Messages, spawns and assignments waiting in memory to be pushed (results deferred to the store
        not counted)."""
        return self._waiting

    # -- as a supervised child ------------------------------------------------------------------
    def offer(self, items: list[bytes], latest: bytes | None = None) -> None:
        """Hand over a RESULTS frame's items; they are cranked on the messenger's thread.

        Most frames send nothing, and their worker says so with ``latest``: each of their processes'
        last result key, joined. Such a frame is taken here, on the caller's thread, with no hand-off,
        when every frame before it is cranked and none of its processes waits in the store: then noting
        its slots as cranked can never pass over a result that is still to be sent."""
        if latest is not None and self._quiet(latest):
            return
        with self._count_lock:
            self._unfinished += 1
        self._inbox.put(("crank", items))

    def _quiet(self, latest: bytes) -> bool:
        """Whether the slots of ``latest`` (log keys, joined) are noted as cranked, here and now."""
        if len(latest) % _KEY_SIZE:
            return False  # not a quiet frame's keys: its crank says what is wrong
        keys = [split_key(latest[at:at + _KEY_SIZE]) for at in range(0, len(latest), _KEY_SIZE)]
        with self._lock:  # 0 read here: every frame before this one is cranked (this thread counted them)
            if self._unfinished or (self._deferred and not self._deferred.isdisjoint(pid for pid, _ in keys)):
                return False
            seen = self._seen
            for pid, slot in keys:
                if slot > seen.get(pid, -1):
                    seen[pid] = slot
            self.quiet_frames += 1
        return True

    def offer_recrank(self, pids: list[str]) -> None:
        """Ask for a recrank of ``pids``, done on the messenger's thread, in turn with the frames
        before it: one thread cranks, so each process's outbox goes out in slot order."""
        with self._count_lock:  # a quiet frame after it waits for it too: its slots would pass those to recrank
            self._unfinished += 1
        self._inbox.put(("recrank", pids))

    def _serve(self) -> None:
        """Crank the frames handed over, a few dozen at a time, and offer one round between them; wait
        for frames only while nothing is flowing to the SU."""
        flowing = False
        while True:
            for taken in range(_FRAMES_PER_ROUND):
                try:
                    item = self._inbox.get(block=not flowing and taken == 0, timeout=_FLUSH_EVERY)
                except queue.Empty:
                    break
                if item is None:
                    while self.flush():  # what was handed over goes out before the end, while the SU takes it
                        pass
                    return
                kind, payload = item
                try:
                    if kind == "crank":
                        self.crank(payload)
                    else:
                        self.recrank(payload)
                finally:
                    with self._count_lock:
                        self._unfinished -= 1
            flowing = self.flush()

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
            if not result.endswith(QUIET_END) and not all(empty in result for empty in _NOTHING_SENT):
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
        queued = 0
        for key, result in sending:
            pid, slot = split_key(key)
            if pid not in held:
                queued += self._enqueue(pid, self._outgoing(pid, slot, orjson.loads(result)))
        self._write_refused()
        with self._lock:
            self._waiting += queued

    def recrank(self, pids: list[str]) -> None:
        """Crank again every stored result of ``pids`` after the last one cranked here (all of them,
        after a reopen): deduplication makes a second crank harmless."""
        for pid in pids:
            with self._lock:
                first = self._seen.get(pid, -1) + 1
            stored = self.store.slot_range("results", pid, first, (1 << 64) - 1)
            if stored:
                self.crank([part for slot, value in stored for part in (log_key(pid, slot), value)])

    def _enqueue(self, pid: str, items: list[_Item]) -> int:
        if items:
            with self._lock:
                waiting = self._queues.get(pid)
                if waiting is None:
                    waiting = self._queues[pid] = deque()
                    self._turns.append(pid)
                waiting.extend(items)
        return len(items)

    def _outgoing(self, pid: str, slot: int, result: dict[str, Any]) -> list[_Item]:
        """What a result asks for, in order: its spawns (each followed by its Spawned notice), its
        assignments, then its messages."""
        if result.get("Error") is not None:
            return []  # a failed message was rolled back whole, its outbox with it
        entry = self.logs.log_entry(pid, slot)
        pushed_for = orjson.loads(entry)["Id"] if entry is not None else ""
        module = self._module_of(pid)
        out = self._spawns(pid, slot, module, pushed_for, result.get("Spawns") or [])
        out += self._assignments(pid, slot, result.get("Assignments") or [])
        for index, raw in enumerate(result.get("Messages") or []):
            message_id = outgoing_id(pid, slot, index)
            try:
                out.append(_Item(message_id, (pid, slot, index), raw, message=self._build(message_id, pid, module,
                                                                                            pushed_for, raw)))
            except ActoraoError as exc:
                self._refuse(message_id, (pid, slot, index), raw, str(exc))
        return out

    def _spawns(self, pid: str, slot: int, module: str, pushed_for: str, spawns: list[Any]) -> list[_Item]:
        """Spawn each child (its id derived from parent, slot and index), then tell the parent, as ao
        does, with an Action=Spawned message from the child naming it."""
        out = []
        for index, raw in enumerate(spawns):
            child = encode_id(hashlib.sha256(f"spawn|{pid}|{slot}|{index}".encode()).digest())
            pushed = (("From-Process", pid), ("From-Module", module), ("Pushed-For", pushed_for))
            try:
                if not isinstance(raw, dict):
                    raise InvalidMessage("Spawns[]", "each spawn must be an object")
                tags = tuple(pair for pair in normalize_tags(raw.get("Tags")) if pair[0] not in PUSHED_TAGS)
            except ActoraoError as exc:
                self._refuse(child, (pid, slot, index), raw, f"spawn refused: {exc}")
                continue
            child_module = next((value for name, value in tags if name == "Module"), "")
            given = raw.get("Data", "")
            data = given if isinstance(given, str) else orjson.dumps(given).decode()
            reference = next((value for name, value in tags if name == "Reference"), None)
            notice_tags = [("Action", "Spawned"), ("AO-Spawn-Success", "true"), ("Process", child)]
            if reference is not None:
                notice_tags.append(("Reference", reference))
            notice_tags += [("From-Process", child), ("From-Module", child_module), ("Pushed-For", pushed_for)]
            notice_id = encode_id(hashlib.sha256(f"spawned|{pid}|{slot}|{index}".encode()).digest())
            notice = Message(notice_id, self.identity, pid, with_ao_tags(notice_tags, "Message"), "", "", sender=child)

            def spawn(child: str = child, child_module: str = child_module, tags: tuple[tuple[str, str], ...] = tags,
                      data: str = data, pushed: tuple[tuple[str, str], ...] = pushed) -> Future[Ack]:
                return self._spawn(child, child_module, tags, data, pushed)

            out.append(_Item(child, (pid, slot, index), raw, act=spawn, then=notice, what="spawn"))
        return out

    def _assignments(self, pid: str, slot: int, assignments: list[Any]) -> list[_Item]:
        """Assign existing messages to further processes, as a result asked; each once per process."""
        out = []
        for index, raw in enumerate(assignments):
            targets = raw.get("Processes") if isinstance(raw, dict) else None
            message_id = raw.get("Message") if isinstance(raw, dict) else None
            for target in targets if isinstance(targets, list) else []:
                def assign(target: str = str(target), message_id: str = str(message_id)) -> Future[Ack]:
                    return self._assign(target, message_id)

                out.append(_Item(f"{message_id}|{target}", (pid, slot, index), raw, act=assign, what="assignment"))
        return out

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

    def _refuse(self, key: str, where: tuple[str, int, int], raw: Any, why: str) -> None:
        """Note an undelivered item; ``_write_refused`` keeps every one noted in one transaction."""
        pid, slot, index = where
        log.debug("process %s slot %d: item %d not delivered: %s", pid, slot, index, why)
        self._refused.append((key, orjson.dumps({"Id": key, "From-Process": pid, "Slot": slot, "Index": index,
                                                 "Reason": why, "Message": raw})))

    def _write_refused(self) -> None:
        refused, self._refused = self._refused, []
        if refused:  # one line for the lot: a fan-out to nowhere must not become a flood of log lines
            self.store.put_undelivered(refused)
            first = orjson.loads(refused[0][1])
            log.warning("%d messages not delivered, kept in undelivered; the first, from process %s slot %d: %s",
                        len(refused), first["From-Process"], first["Slot"], first["Reason"])

    def flush(self) -> bool:
        """Offer one round to the schedulers and wait for the answers: from each sending process in
        turn, the run of messages, or of spawns and assignments, at the head of its queue, at most
        ``_SHARE`` of it and ``_FLUSH_BATCH`` in all. What the SU takes, or refuses for good, is done
        and leaves its queue; what it pushes back stays and is offered again with the same ids, so
        nothing is assigned twice and each target sees a sender's messages in order. Once every queue
        has drained, the results left in the store meanwhile are cranked. Returns whether the round
        was taken whole and more waits."""
        plan: list[list[_Item]] = []
        with self._lock:
            total = 0
            for pid in self._turns:
                taken: list[_Item] = []
                for item in self._queues[pid]:
                    if item.done:  # done out of turn: a later spawn taken while an earlier one was pushed back
                        continue
                    if (taken and (item.act is None) != (taken[0].act is None)) or len(taken) >= _SHARE:
                        break
                    taken.append(item)
                plan.append(taken)
                total += len(taken)
                if total >= _FLUSH_BATCH:
                    break
            if not plan:
                deferred, self._deferred = self._deferred, set()
                if deferred:  # until they are recranked, no quiet frame may note their slots
                    with self._count_lock:
                        self._unfinished += 1
        if not plan:
            if deferred:
                try:
                    self.recrank(sorted(deferred))
                finally:
                    with self._count_lock:
                        self._unfinished -= 1
            return False
        pushed_back = self._offer_messages([taken for taken in plan if taken[0].act is None])
        pushed_back |= self._act([taken for taken in plan if taken[0].act is not None])
        self._write_refused()
        with self._lock:
            for _ in plan:  # the round's processes go to the back of the turns, in order
                pid = self._turns.popleft()
                waiting = self._queues[pid]
                while waiting and waiting[0].done:
                    waiting.popleft()
                    self._waiting -= 1
                if waiting:
                    self._turns.append(pid)
                else:
                    del self._queues[pid]
            more = bool(self._turns)
        return more and not pushed_back

    def _offer_messages(self, runs: list[list[_Item]]) -> bool:
        """Submit the round's messages in one batch; on a refusal for good, one by one, in each
        process's order. Marks those done; returns whether the SU pushed any back."""
        scheduler = self._scheduler()
        known: list[list[_Item]] = []
        for run in runs:  # a target unknown now stays unknown: the sender's spawns came before
            known.append([])
            for item in run:
                assert item.message is not None
                if scheduler.knows(item.message.target):
                    known[-1].append(item)
                else:
                    self._refuse(item.key, item.where, item.raw, f"no process {item.message.target} here")
                    item.done = True
        batch = [item.message for run in known for item in run if item.message is not None]
        if not batch:
            return False
        try:
            scheduler.submit_many(batch).result(_SUBMIT_WAIT)
        except _TRY_AGAIN as exc:  # pushed back, restarted or closing: offered again
            log.debug("messenger: %d messages wait: %s", len(batch), exc)
            return True
        except ActoraoError:  # one of them is refused for good: find it, and let the others go
            pushed_back = False
            for run in known:
                for item in run:
                    assert item.message is not None
                    try:
                        scheduler.submit_many([item.message]).result(_SUBMIT_WAIT)
                    except _TRY_AGAIN:
                        pushed_back = True
                        break  # the rest of this sender's run waits behind it
                    except ActoraoError as exc:
                        self._refuse(item.key, item.where, item.raw, str(exc))
                    item.done = True
            return pushed_back
        for run in known:
            for item in run:
                item.done = True
        return False

    def _act(self, runs: list[list[_Item]]) -> bool:
        """Submit the round's spawns and assignments, all at once, and wait for each. A spawn taken
        puts its Spawned notice in its place, to go in a later round; the rest taken, or refused for
        good, are done. Returns whether the SU pushed any back."""
        pushed_back = False
        acting: list[tuple[_Item, Future[Any]]] = []
        for run in runs:
            for item in run:
                assert item.act is not None
                try:
                    acting.append((item, item.act()))
                except _TRY_AGAIN:
                    pushed_back = True
                    break  # the rest of this sender's run waits behind it
                except ActoraoError as exc:
                    self._refuse(item.key, item.where, item.raw, f"{item.what} refused: {exc}")
                    item.done = True
        for item, future in acting:
            try:
                future.result(_SUBMIT_WAIT)
            except _TRY_AGAIN:
                pushed_back = True
                continue
            except ActoraoError as exc:
                self._refuse(item.key, item.where, item.raw, f"{item.what} refused: {exc}")
                item.done = True
                continue
            notice = item.then
            if notice is not None:
                item.act, item.message, item.then, item.key = None, notice, None, notice.id
            else:
                item.done = True
        return pushed_back

    # -- reading --------------------------------------------------------------------------------
    def undelivered(self) -> list[dict[str, Any]]:
        return [orjson.loads(raw) for raw in self.store.undelivered()]
