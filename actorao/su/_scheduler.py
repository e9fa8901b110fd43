"""The scheduler unit: gives each message the next slot of its process, stamps and chains it, and
stores it, acknowledging the sender only once the assignment is synced to disk.

One thread owns all assignment of one store. Callers enqueue requests; the thread takes everything
waiting, assigns it, and commits it in one synced LMDB transaction (group commit): a thousand waiting
senders share one fsync. A scheduler shard's process (``_shard.py``) runs it unthreaded: its one loop
takes what the node sent, then calls ``assign_queued``, with no hand-off between threads.
Heads (next slot, last assignment) live in memory, loaded from the log (or from a hand-off record, for
a process this shard adopted) on first use, so after a restart the SU continues at the next slot.

A shard pushes each commit's assignments to the workers before the commit, and its fsync, so that
the workers evaluate while the disk syncs (``push_ahead``); ``durable`` then tells them the commit is
synced. What may happen in between is written down at ``_commit``.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import lmdb
import orjson

from actorao._config import DEFAULT_MAX_PENDING
from actorao._exceptions import ActoraoError, NodeStopped, Overloaded, UnknownProcess
from actorao._future import Future
from actorao.ans104 import item_signature
from actorao.message import (
    ASSIGNMENT_TEXT,
    URLSAFE,
    Assignment,
    Message,
    Process,
    Tag,
    assigned_template,
    assignment_from_module_json,
    decode_id,
    module_json,
    new_id,
    tags_json,
)
from actorao.persist import PROCESS, ModuleRecord, Store, log_key, split_key
from actorao.supervisor import ThreadChild

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8192
_sha256, _b2a = hashlib.sha256, binascii.b2a_base64


class Ack(NamedTuple):
    """The SU's answer: the message is durable at this slot of this process. A named tuple: the
    node's client builds one for every message it sends, from the shard's answer, at a quarter of a
    frozen dataclass's cost."""

    id: str
    process: str
    slot: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class NewMessages:
    """Messages from the node whose ids this SU mints, as a shard's request carries them: rows of
    (target, number of its tag set, data, anchor), and the tag sets they name. They are assigned
    without ever becoming Message objects."""

    owner: str
    rows: list[list[Any]]
    tag_sets: list[tuple[Tag, ...]]


RawAck = tuple[str, str, int, int]  # an Ack's fields (id, process, slot, timestamp), as the wire carries them


@dataclass(slots=True)
class _Request:
    """One caller's items, answered together: a list of Acks, or the Ack alone when ``single``."""

    items: list[Message | Process]
    future: Future[Any]
    single: bool
    module: ModuleRecord | None = None
    fresh_ids: bool = False  # ids minted by this node just now: no need to look for duplicates
    limits: tuple[int, int] | None = None  # a spawn's (compute, memory) limits
    assign_to: str | None = None  # an existing message, assigned to one more process
    signed: bytes | None = None  # the signed data item a single item came in as, kept with it
    handoff: dict[str, Any] | None = None  # release a process to another shard, or adopt one from it
    new: NewMessages | None = None  # messages whose ids are minted here: answered with RawAcks

    @property
    def size(self) -> int:
        """How many messages the request holds, for the pending bound."""
        return len(self.new.rows) if self.new is not None else len(self.items)


class _Head:
    """Where a process's hash chain stands: the slot its next assignment takes, and its last
    assignment (none before slot 0), kept as fields, its text as UTF-8 bytes and the hash chain's
    bytes too, so that a link costs two SHA-256 and no object. A commit moves the SU's heads in place,
    and keeps what each was before it first moved (``state``): a commit that fails, or runs again,
    puts them back (``restore``)."""

    __slots__ = ("chain", "chain_raw", "message", "moved", "next_slot", "process", "process_bytes", "slot",
                 "target_json", "timestamp")

    def __init__(self, process: str, next_slot: int, last: Assignment | None) -> None:
        self.process = process
        self.process_bytes = process.encode()
        self.next_slot = next_slot
        self.target_json = orjson.dumps(process)
        self.moved = 0  # the number of the commit that last moved it
        self.message: bytes | None
        if last is None:
            self.slot, self.message, self.timestamp, self.chain, self.chain_raw = -1, None, 0, b"", b""
        else:
            self.slot, self.message, self.timestamp = last.slot, last.message.encode(), last.timestamp
            self.chain, self.chain_raw = last.hash_chain.encode(), decode_id(last.hash_chain)

    @property
    def last(self) -> Assignment | None:
        if self.message is None:
            return None
        return Assignment(self.process, self.slot, self.message.decode(), self.timestamp, self.chain.decode())

    def state(self) -> tuple[Any, ...]:
        return self.next_slot, self.slot, self.message, self.timestamp, self.chain, self.chain_raw, self.moved

    def restore(self, state: tuple[Any, ...]) -> None:
        self.next_slot, self.slot, self.message, self.timestamp, self.chain, self.chain_raw, self.moved = state

    def advance(self, message_id: bytes, now: int) -> tuple[int, int, bytes]:
        """Give ``message_id`` (its text, as bytes) the next slot: its (slot, timestamp, hash chain), the
        head moved past it. Timestamps never go backwards within a process, even if the wall clock does."""
        if self.message is None:  # slot 0 starts the chain at the process's genesis
            slot, timestamp = 0, now
            raw = hashlib.sha256(decode_id(self.process)).digest()
        else:
            slot, timestamp = self.next_slot, now if now > self.timestamp else self.timestamp
            # next_link and encode_id on the head's bytes, written out: this runs once per message
            raw = _sha256(_sha256(ASSIGNMENT_TEXT % (self.process_bytes, self.slot, self.message, self.timestamp,
                                                     self.chain)).digest() + self.chain_raw).digest()
        chain = _b2a(raw, newline=False).translate(URLSAFE)[:43]
        self.next_slot, self.slot, self.message, self.timestamp, self.chain, self.chain_raw = (
            slot + 1, slot, message_id, timestamp, chain, raw)
        return slot, timestamp, chain


Undo = dict[str, "tuple[_Head, tuple[Any, ...]] | None"]  # each head a commit moved, as it was (None: new)


def process_record(module: str, limits: tuple[int, int] | None) -> bytes:
    """What the processes database keeps for a process: its module, and the limits fixed at spawn."""
    record: dict[str, object] = {"module": module}
    if limits is not None:
        record["compute_limit"], record["memory_limit"] = limits
    return orjson.dumps(record)


Pushed = Callable[[list[tuple[str, bytes, bytes]]], None]
PushAhead = Callable[[list[tuple[str, bytes, bytes]], int], list[tuple[str, bytes, bytes]]]
_SLOT_ZERO = bytes(8)  # how a log key of slot 0 ends
# Assignments of a commit after which the store keeps its file written ahead (``allocate_ahead``): a
# serial sender's commits, not a flood's.
_SMALL_COMMIT = 16


class SchedulerUnit(ThreadChild):
    """Assigns slots. ``on_assigned`` receives (process id, log key, module JSON) after each commit."""

    def __init__(
        self,
        store: Store,
        on_assigned: Pushed,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_batch: int = DEFAULT_MAX_BATCH,
        clock: Callable[[], float] = time.time,
        attest: Callable[[lmdb.Transaction, list[list[Any]], int], None] | None = None,
        sign: Callable[[bytes], str] | None = None,
        index: int = 0,
        threaded: bool = True,
        push_ahead: PushAhead | None = None,
        durable: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.index = index  # this SU's shard: hand-offs name shards by number
        self._sign = sign  # signs hand-off records
        self._attest = attest  # signs each commit's chain heads, inside its transaction
        self._on_assigned = on_assigned
        self._push_ahead = push_ahead  # (pushes, commit number) -> those it did not push
        self._durable = durable  # commit number: synced
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._pending = 0  # items queued and not yet committed
        self._pending_lock = threading.Lock()
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._clock = clock
        self._heads: dict[str, _Head] = {}
        self._released: set[str] = set()  # handed to another shard: their messages go there now
        self._processes: set[str] = set(self._load_process_ids())
        self._closed = False
        self.commits = 0  # synced transactions so far: group commit makes this far below the messages
        self._commit_number = store.last_commit()  # each commit's, in the messages index and its attestation
        self.first_commit = self._commit_number  # durable at start: a push ahead numbered above it was lost
        self.assigned = 0  # assignments made since start
        self._threaded = threaded
        if threaded:
            self._start_thread("su-group-commit")

    def _load_process_ids(self) -> list[str]:
        mine = []
        for pid in self.store.process_ids():
            handoffs = self.store.handoffs(pid)
            if handoffs and orjson.loads(handoffs[-1][1])["to_shard"] != self.index:
                self._released.add(pid)
            else:
                mine.append(pid)
        return mine

    @property
    def processes(self) -> frozenset[str]:
        return frozenset(self._processes)

    def knows(self, pid: str) -> bool:
        return pid in self._processes

    # -- entry ----------------------------------------------------------------------------------
    def submit(
        self,
        item: Message | Process,
        module: ModuleRecord | None = None,
        *,
        fresh_id: bool = False,
        limits: tuple[int, int] | None = None,
        signed: bytes | None = None,
    ) -> Future[Ack]:
        """Queue ``item`` for assignment; the future gives its Ack once it is durable. A Process may
        carry its (compute, memory) limits, stored with it so that every replay uses the same.
        ``signed`` is the ANS-104 data item ``item`` came in as: it is stored in the same transaction
        as the assignment, so the SU can always serve what was signed."""
        return self._enqueue(_Request([item], Future(), True, module, fresh_id, limits, None, signed))

    def submit_assignment(self, message: Message, pid: str) -> Future[Ack]:
        """Assign an existing message to one more process, once: the message keeps its id, Target and
        From, and gets a slot in ``pid``'s order too."""
        if pid not in self._processes:
            raise UnknownProcess(f"no process {pid} on this node")
        return self._enqueue(_Request([message], Future(), True, None, False, None, pid))

    def submit_many(self, items: list[Message], *, fresh_ids: bool = False) -> Future[list[Ack]]:
        """Queue many messages at once; the future gives their Acks, in order, once all are durable."""
        return self._enqueue(_Request(list(items), Future(), False, None, fresh_ids))

    def submit_new(self, new: NewMessages, *, single: bool = False) -> Future[Any]:
        """Queue messages from the node (see NewMessages), minting their ids at assignment. The future
        gives a RawAck for each, in order (the RawAck alone when ``single``). A malformed row or an
        unknown target refuses the whole request here, before it is queued."""
        processes, sets = self._processes, len(new.tag_sets)
        for row in new.rows:
            if len(row) != 4:
                raise ActoraoError(f"a new message is {row!r:.80}, not (target, tag set, data, anchor)")
            target, number, data, anchor = row
            if target not in processes:
                if target in self._released:
                    raise Overloaded(f"process {target} moved to another scheduler; send it again")
                raise UnknownProcess(f"no process {target} on this node")
            if type(number) is not int or not 0 <= number < sets or type(data) is not str or type(anchor) is not str:
                raise ActoraoError(f"a new message is {row!r:.80}, not (target, tag set, data, anchor)")
        return self._enqueue(_Request([], Future(), single, new=new))

    def submit_handoff(self, handoff: dict[str, Any]) -> Future[dict[str, Any]]:
        """Release a process to another shard (``{"kind": "release", "process", "to", "to_shard"}``),
        or adopt one released to this shard (``{"kind": "adopt", "record", "process_record"}``), in
        order with the assignments around it."""
        return self._enqueue(_Request([], Future(), True, handoff=handoff))

    def _enqueue(self, request: _Request) -> Future[Any]:
        if self._closed:
            raise NodeStopped("the scheduler is closed")
        for item in request.items:  # an assignment's message may target a process of another shard
            if isinstance(item, Message) and request.assign_to is None and item.target not in self._processes:
                if item.target in self._released:
                    raise Overloaded(f"process {item.target} moved to another scheduler; send it again")
                raise UnknownProcess(f"no process {item.target} on this node")
        # One lock for the closed check, the bound and the put: a request can never land in the
        # queue behind close()'s stop marker, where no one would answer it.
        with self._pending_lock:
            if self._closed:
                raise NodeStopped("the scheduler is closed")
            # A request larger than the bound is taken when nothing else waits: it can always make
            # progress, and its messages are already in its caller's memory.
            size = request.size
            if self._pending and self._pending + size > self._max_pending:
                raise Overloaded(
                    f"{self._pending} messages await assignment; {size} more would pass "
                    f"the node's limit of {self._max_pending}"
                )
            self._pending += size
            self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Assign everything already queued, then stop."""
        with self._pending_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if self._threaded:
            self._thread.join()
        else:
            self.assign_queued()

    def is_alive(self) -> bool:
        return super().is_alive() if self._threaded else not self._closed

    @property
    def queued(self) -> int:
        """Items waiting for assignment."""
        return self._pending

    @property
    def max_batch(self) -> int:
        return self._max_batch

    def assign_queued(self) -> None:
        """Unthreaded: assign and commit, on the caller's thread, everything queued so far."""
        while True:
            try:
                first = self._queue.get_nowait()
            except queue.Empty:
                return
            batch, size, _ = self._take_batch(first)
            self._commit_batch(batch, size)

    # -- as a supervised child ------------------------------------------------------------------
    def stop(self, timeout: float | None) -> None:
        self.close()

    def kill(self) -> None:
        self.close()

    # -- the group-commit loop ------------------------------------------------------------------
    def _serve(self) -> None:
        self._assign_until_closed()

    def _failed(self, exc: BaseException) -> None:
        """Everything still queued is refused: nothing queued was acknowledged."""
        with self._pending_lock:
            self._closed = True
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not None:
                request.future.set_exception(NodeStopped(f"the SU failed: {exc}"))

    def _assign_until_closed(self) -> None:
        stopping = False
        while not stopping:
            batch, size, stopping = self._take_batch(self._queue.get())
            self._commit_batch(batch, size)

    def _take_batch(self, first: _Request | None) -> tuple[list[_Request], int, bool]:
        """``first`` and whatever else waits, up to a batch; and whether the stop marker was seen."""
        batch: list[_Request] = []
        size = 0
        stopping = first is None
        if first is not None:
            batch.append(first)
            size = first.size
        while size < self._max_batch:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                stopping = True
            else:
                batch.append(request)
                size += request.size
        return batch, size, stopping

    def _commit_batch(self, batch: list[_Request], size: int) -> None:
        if batch:
            made = self._commit(batch)
            with self._pending_lock:
                self._pending -= size
            if made is not None and made <= _SMALL_COMMIT:  # the next small commits keep the file's length
                self.store.allocate_ahead()

    def _commit(self, batch: list[_Request]) -> int | None:
        """Assign ``batch`` in one synced transaction. With ``push_ahead``, its assignments go to the
        workers before the commit: they evaluate while it syncs, and hold every result of it until
        ``durable`` says the commit is synced (``cu/_ahead.py``). In between:
        - the shard is killed before the commit returns: the transaction is either all on disk, or not
          there. The successor's first commit number (``first_commit``) says which: a worker holding a
          push ahead numbered at or below it keeps its results; above it, forgets them and the
          process's state, and evaluates again from checkpoint and log;
        - the commit fails (a full disk): the next commit takes the same number, and a worker that
          hears of a number again forgets what it took ahead under it;
        - a machine crash loses the workers' speculation with the workers, and nothing of it was
          committed to their results: a worker commits a result only once its slot is durable.
        The commit itself stays LMDB's synced one (pages, fsync, meta page, fsync). Committing unsynced
        and syncing after would hide the fsync too, but a machine that lost power during that late
        sync could keep the new meta page and not the pages it points to: the whole log would be torn.
        Processes this commit creates (slot 0) or adopts are pushed after it: a worker loads a process
        from its record, which this commit writes. Returns how many assignments it made; None if the
        store failed."""
        released: set[str] = set()
        adopted: set[str] = set()
        undo: Undo = {}
        refused: list[bool] = []
        commit = self._commit_number + 1
        made = [0]  # assignments, pushed ahead or not

        def assign(txn: lmdb.Transaction) -> tuple[list[list[Any]], list[tuple[str, bytes, bytes]]]:
            answers, pushes = self._assign_all(txn, batch, released, adopted, undo, refused)
            made[0] = len(pushes)
            if self._push_ahead is not None and pushes:
                fresh = adopted | {pid for pid, key, _ in pushes if key.endswith(_SLOT_ZERO)}
                if fresh:  # a commit of messages alone, the common one, pushes all ahead without sorting them
                    later = [push for push in pushes if push[0] in fresh]
                    pushes = later + self._push_ahead([push for push in pushes if push[0] not in fresh], commit)
                else:
                    pushes = self._push_ahead(pushes, commit)
            if self._attest is not None:  # after the push: the workers need no signature
                heads = self._heads
                self._attest(txn, [[pid, head.slot, head.chain.decode()] for pid in undo
                                   if (head := heads[pid]).message is not None], commit)
            return answers, pushes

        try:
            answers, pushes = self.store.write(assign)
        except Exception as exc:  # the store failed: nothing in this batch is acknowledged
            log.exception("group commit of %d requests failed", len(batch))
            self._roll_back(undo)  # heads moved in memory for a transaction that did not commit
            error = exc if isinstance(exc, ActoraoError) else ActoraoError(f"assignment failed: {exc}")
            for request in batch:
                request.future.set_exception(error)
            self._on_assigned([])
            return None
        self.commits += 1
        self._commit_number += 1
        if self._durable is not None:  # before any answer: a worker holds results, a sender waits on one
            self._durable(self._commit_number)
        self.assigned += made[0]
        for pid in released:
            self._processes.discard(pid)
            self._heads.pop(pid, None)
        self._released -= adopted
        self._released |= released
        self._processes |= adopted
        for request, acks, failed in zip(batch, answers, refused, strict=True):
            if failed:
                request.future.set_exception(next(ack for ack in acks if isinstance(ack, Exception)))
                continue
            for item in request.items:
                if isinstance(item, Process):
                    self._processes.add(item.id)
            request.future.set_result(acks[0] if request.single else acks)
        self._on_assigned(pushes)  # also when empty: a shard answers its requests after every commit
        return made[0]

    def _roll_back(self, undo: Undo) -> None:
        """Put the heads a commit moved back as they were before it."""
        heads = self._heads
        for pid, before in undo.items():
            if before is None:
                heads.pop(pid, None)
            else:
                head, state = before
                head.restore(state)
                heads[pid] = head
        undo.clear()

    def _assign_all(
        self, txn: lmdb.Transaction, batch: list[_Request], released: set[str], adopted: set[str], undo: Undo,
        refused: list[bool],
    ) -> tuple[list[list[Any]], list[tuple[str, bytes, bytes]]]:
        # This body may run again (LMDB map growth retries it): what the last run moved is put back first.
        self._roll_back(undo)
        seen: dict[str, Ack] = {}
        answers: list[list[Any]] = []
        pushes: list[tuple[str, bytes, bytes]] = []
        now = int(self._clock() * 1000)
        store = self.store
        commit = self._commit_number + 1
        released.clear()
        adopted.clear()
        refused.clear()
        for request in batch:
            acks: list[Any] = []
            answers.append(acks)
            if request.handoff is not None:
                acks.append(self._hand_off(txn, request.handoff, undo, released, adopted, commit))
                refused.append(isinstance(acks[0], Exception))
                continue
            if request.new is not None:
                refused.append(self._assign_new(txn, request.new, undo, released, acks, pushes, now, commit))
                continue
            fresh, assignee = request.fresh_ids, request.assign_to
            for item in request.items:
                # An id is assigned once per process: to its target, and once to each assignee.
                # Assigning a message to its own target is no new assignment: it is the message.
                if assignee is None:
                    once = item.id
                else:
                    own = item.id if isinstance(item, Process) else item.target
                    once = store.once_key(item.id, None if assignee == own else assignee)
                if not fresh:  # a fresh id (minted here) cannot have been assigned: no lookup
                    earlier = seen.get(once) or self._existing_ack(txn, once, item.id)
                    if earlier is not None:  # the same message again: assigned once, acknowledged again
                        acks.append(earlier)
                        continue
                if isinstance(item, Process):
                    if request.module is not None:
                        store.put_module(txn, request.module)
                    store.put_process(txn, item.id, process_record(item.module, request.limits))
                    store.put_tagged(txn, PROCESS, item.id, item.owner, item.tags)
                    pid, message = item.id, item.as_message()
                    self._new_head(_Head(pid, 0, None), undo, commit)
                else:
                    pid, message = request.assign_to or item.target, item
                head = self._working_head(txn, pid, undo, released, commit)
                if head is None:
                    acks.append(self._refusal(pid, released))
                    continue
                slot, timestamp, chain = head.advance(message.id.encode(), now)
                assignment = Assignment(pid, slot, message.id, timestamp, chain.decode())
                body = module_json(message, assignment, signature=item_signature(request.signed)
                                   if request.signed is not None else "")
                signed = (message.id, request.signed) if request.signed is not None else None
                key = store.put_assignment(txn, pid, slot, body, once, signed, commit)
                ack = Ack(message.id, pid, slot, timestamp)
                if not fresh:
                    seen[once] = ack
                acks.append(ack)
                pushes.append((pid, key, body))
            refused.append(any(isinstance(ack, Exception) for ack in acks))
        return answers, pushes

    def _assign_new(
        self, txn: lmdb.Transaction, new: NewMessages, undo: Undo, released: set[str], acks: list[Any],
        pushes: list[tuple[str, bytes, bytes]], now: int, commit: int,
    ) -> bool:
        """Assign messages minted here: the common path of every message the node sends, so it builds
        no object per message but its answer and its push, and writes each commit's entries in one
        call. Returns whether any was refused."""
        owner_json = orjson.dumps(new.owner)
        templates = [assigned_template(owner_json, tags_json(tags)) for tags in new.tag_sets]
        texts, ids = new_id.many(len(new.rows))
        dumps, heads, key_of = orjson.dumps, self._heads, log_key
        entries: list[tuple[bytes, bytes]] = []
        kept: list[bytes] = []
        refused = False
        for (target, number, data, anchor), text, message_id in zip(new.rows, texts, ids, strict=True):
            head = heads.get(target)
            if head is None or (released and target in released):
                head = self._working_head(txn, target, undo, released, commit)
                if head is None:
                    acks.append(self._refusal(target, released))
                    refused = True
                    continue
            elif head.moved != commit:  # _working_head's bookkeeping, for a head in memory: with many processes,
                undo[target] = (head, head.state())  # most messages are the first of theirs in a commit
                head.moved = commit
            slot, timestamp, chain = head.advance(message_id, now)
            body = templates[number] % (message_id, dumps(data) if data else b'""', head.target_json,
                                        dumps(anchor) if anchor else b"null", slot, timestamp, chain)
            key = key_of(target, slot)
            entries.append((key, body))
            kept.append(message_id)
            acks.append((text, target, slot, timestamp))
            pushes.append((target, key, body))
        self.store.put_fresh_assignments(txn, entries, kept, commit)
        return refused

    def _new_head(self, head: _Head, undo: Undo, commit: int) -> None:
        """Give a process spawned or adopted in this commit its first head."""
        before = self._heads.get(head.process)
        if head.process not in undo:
            undo[head.process] = None if before is None else (before, before.state())
        head.moved = commit
        self._heads[head.process] = head

    def _working_head(
        self, txn: lmdb.Transaction, pid: str, undo: Undo, released: set[str], commit: int
    ) -> _Head | None:
        """``pid``'s head, kept in ``undo`` as it was before this commit first moves it; None if it is
        not this SU's to assign."""
        if pid in released:
            return None
        head = self._head(txn, pid)
        if head is not None and head.moved != commit:
            undo[pid] = (head, head.state())
            head.moved = commit
        return head

    def _refusal(self, pid: str, released: set[str]) -> ActoraoError:
        if pid in released or pid in self._released:
            return Overloaded(f"process {pid} moved to another scheduler; send it again")
        return UnknownProcess(f"no process {pid} on this node")

    def _head(self, txn: lmdb.Transaction, pid: str) -> _Head | None:
        head = self._heads.get(pid)
        if head is not None:
            return head
        if self.store.process_record(pid, txn) is None or pid in self._released:
            return None
        latest = self.store.head(pid, txn)
        handoffs = self.store.handoffs(pid, txn)
        taken = orjson.loads(handoffs[-1][1]) if handoffs else None
        if taken is not None and (latest is None or latest[0] < taken["slot"]):  # adopted, nothing assigned since
            last = Assignment(pid, *taken["head"]) if taken["head"] is not None else None
            head = _Head(pid, taken["slot"], last)
        elif latest is None:
            head = _Head(pid, 0, None)
        else:
            last = assignment_from_module_json(latest[1], pid)
            head = _Head(pid, last.slot + 1, last)
        self._heads[pid] = head
        return head

    def _hand_off(
        self, txn: lmdb.Transaction, handoff: dict[str, Any], undo: Undo, released: set[str], adopted: set[str],
        commit: int,
    ) -> dict[str, Any] | Exception:
        """Write one side of a hand-off. Releasing signs a record of the slot from which the other
        shard schedules the process, with the head its chain continues from; adopting stores that
        same record and the process, and takes the head."""
        if handoff["kind"] == "release":
            pid = str(handoff["process"])
            head = None if pid in released else self._head(txn, pid)
            if head is None:
                return UnknownProcess(f"no process {pid} on this scheduler")
            last = head.last
            fields = {"process": pid, "from_shard": self.index, "to_shard": int(handoff["to_shard"]),
                      "to": str(handoff["to"]), "slot": head.next_slot,
                      "head": None if last is None else [last.slot, last.message, last.timestamp, last.hash_chain]}
            signature = self._sign(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)) if self._sign else ""
            record = orjson.dumps({**fields, "signature": signature})
            self.store.put_handoff(txn, pid, head.next_slot, record)
            released.add(pid)
            return {"record": record.decode()}
        fields = orjson.loads(handoff["record"])
        pid = fields["process"]
        if pid in self._processes or pid in undo:  # adopted already: its answer was lost, and it is asked again
            return {"adopted": pid, "slot": fields["slot"]}
        self.store.put_process(txn, pid, str(handoff["process_record"]).encode())
        self.store.put_handoff(txn, pid, fields["slot"], str(handoff["record"]).encode())
        last = Assignment(pid, *fields["head"]) if fields["head"] is not None else None
        self._new_head(_Head(pid, fields["slot"], last), undo, commit)
        adopted.add(pid)
        return {"adopted": pid, "slot": fields["slot"]}

    def _existing_ack(self, txn: lmdb.Transaction, once: str, message_id: str) -> Ack | None:
        key = self.store.assignment_of(once, txn=txn)
        if key is None:
            return None
        pid, _ = split_key(key)
        entry = self.store.entry_in(txn, key)
        doc = orjson.loads(entry)
        return Ack(message_id, pid, doc["Nonce"], doc["Timestamp"])
