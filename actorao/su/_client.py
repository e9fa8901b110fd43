"""The node's side of its scheduler shards. ``Schedulers`` answers the calls a SchedulerUnit answers
(submit, submit_many, submit_assignment, knows, processes, head_timestamp), by sending each request to
the shard that owns its process and resolving the future when that shard's ACKS frame comes back.

One thread listens to every shard. It handles frames: a commit's answers arrive in one frame. The
shards push the assignments to the workers themselves: each request tells its shard where the
processes it names live (``placement``: the CU pool's), once per process and shard, and the pool holds
processes in every shard while it moves them (``hold``, ``unhold``). The few a shard cannot place come
back in an ASSIGNED frame, handed on to the CU pool (``on_assigned``), which routes them.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import zmq

from actorao._exceptions import ActoraoError, InvalidMessage, NodeStopped, Overloaded, UnknownProcess
from actorao._future import Future
from actorao.mailbox import (
    ACKS,
    ASSIGNED,
    READY,
    REQUEST,
    acks_address,
    listen,
    open_socket,
    pack,
    shard_address,
    unpack,
)
from actorao.message import Message, Process, encode_id
from actorao.persist import ModuleRecord, ShardLogs
from actorao.su._scheduler import Ack
from actorao.su._wire import NewRow, read_answer, request

log = logging.getLogger(__name__)

_POLL_MS = 100
NewMessage = tuple[str, tuple[tuple[str, str], ...], str, str]  # target, checked tags, data, anchor


def scheduler_address(identity: str, index: int) -> str:
    """The address of the node's shard ``index``, as a process's ``Scheduler`` tag names it: shard 0
    is the node itself, so a node with one shard answers as it always has."""
    if index == 0:
        return identity
    return encode_id(hashlib.sha256(f"scheduler|{identity}|{index}".encode()).digest())


def shard_for(pid: str, shards: int) -> int:
    """The shard a new process goes to when its spawn names none: an even spread by its id."""
    return int.from_bytes(hashlib.blake2b(pid.encode(), digest_size=8).digest(), "big") % shards


class _Pending:
    __slots__ = ("future", "shard", "spawned")

    def __init__(self, future: Future[Any], shard: int, spawned: str | None) -> None:
        self.future, self.shard, self.spawned = future, shard, spawned


class Schedulers:
    """Requests to the shards, and their answers. Thread-safe: the API, HTTP threads, the messenger
    and cron all submit."""

    def __init__(
        self, logs: ShardLogs, runtime: Path, identity: str, on_assigned: Callable[[list[bytes]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._logs = logs
        self._clock = clock  # the node's: each request carries its time, and the shard stamps with it
        self._runtime = runtime
        self._on_assigned = on_assigned
        self.count = logs.count
        self.addresses = [scheduler_address(identity, index) for index in range(self.count)]
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._acks = open_socket(self._context, zmq.PULL, acks_address(runtime), bind=True, high_water_mark=0)
        self._outlets = [self._connect(index) for index in range(self.count)]
        self._send_locks = [threading.Lock() for _ in range(self.count)]
        # Where each process's worker is, as the CU pool has it (None while it moves); and what each
        # shard was told of it, under its send lock.
        self.placement: Callable[[str], int | None] = lambda pid: None
        self._told: list[dict[str, int]] = [{} for _ in range(self.count)]
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)  # notified as the pending requests run out
        self._restarts: dict[int, int] = {}  # shard restarted -> its first token after: failed by the listener
        self._feed_addresses: dict[int, tuple[str, int]] = {}  # worker -> its feed, on a TCP transport (``feeds``)
        self._next_token = 0
        self._processes: dict[str, int] = logs.process_ids()
        self._counters = [{"assigned": 0, "commits": 0} for _ in range(self.count)]
        self._ready: set[int] = set()
        self._ready_cond = threading.Condition()
        self._stopped = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="su-acks", daemon=True)
        self._listener.start()

    def _connect(self, index: int) -> zmq.Socket[bytes]:
        return open_socket(self._context, zmq.PUSH, shard_address(self._runtime, index), bind=False,
                           high_water_mark=0)

    # -- what a SchedulerUnit answers -------------------------------------------------------------
    @property
    def processes(self) -> frozenset[str]:
        return frozenset(self._processes)

    def knows(self, pid: str) -> bool:
        return pid in self._processes

    def shard_named(self, address: str) -> int:
        """The shard whose address a spawn's ``Scheduler`` tag names."""
        try:
            return self.addresses.index(address)
        except ValueError:
            raise InvalidMessage("Tags['Scheduler']", f"no scheduler {address!r:.60} on this node; its schedulers "
                                 f"are {', '.join(self.addresses)}") from None

    def shard_of(self, pid: str) -> int:
        index = self._processes.get(pid)
        if index is None:
            raise UnknownProcess(f"no process {pid} on this node")
        return index

    @property
    def assigned(self) -> int:
        return sum(counter["assigned"] for counter in self._counters)

    @property
    def commits(self) -> int:
        return sum(counter["commits"] for counter in self._counters)

    def head_timestamp(self, pid: str) -> int:
        head = self._logs.head(pid)
        return int(orjson.loads(head[1])["Timestamp"]) if head is not None else 0

    def submit(
        self, item: Message | Process, module: ModuleRecord | None = None, *, fresh_id: bool = False,
        limits: tuple[int, int] | None = None, signed: bytes | None = None, shard: int | None = None,
    ) -> Future[Ack]:
        """One item; a spawn goes to ``shard`` (default: spread by its id). Its module must be stored
        already: the shard writes its own log, the node its modules."""
        if module is not None:
            raise ActoraoError("the node stores a spawn's module before it submits the spawn")
        if isinstance(item, Process):
            index = shard_for(item.id, self.count) if shard is None else shard
            return self._send(index, lambda token: request(token, [item], single=True, fresh=fresh_id,
                                                           limits=limits, signed=signed),
                              spawned=item.id, targets=(item.id,))
        index = self.shard_of(item.target)
        return self._send(index, lambda token: request(token, [item], single=True, fresh=fresh_id, signed=signed),
                          targets=(item.target,))

    def submit_assignment(self, message: Message, pid: str) -> Future[Ack]:
        index = self.shard_of(pid)
        return self._send(index, lambda token: request(token, [message], assign_to=pid), targets=(pid,))

    def submit_many(self, items: Sequence[Message], *, fresh_ids: bool = False) -> Future[list[Ack]]:
        def part(positions: list[int]) -> Callable[[int], bytes]:
            return lambda token: request(token, [items[at] for at in positions], fresh=fresh_ids)

        targets = [item.target for item in items]
        by_shard = self._split(targets)
        return self._gather(len(items), {
            index: (positions, self._send(index, part(positions), targets=[targets[at] for at in positions]))
            for index, positions in by_shard.items()})

    def submit_new(
        self, rows: list[NewRow], tag_sets: list[tuple[tuple[str, str], ...]], targets: Iterable[str],
    ) -> Future[list[Ack]]:
        """Messages from the node, already checked, as rows (target, number of its tag set in
        ``tag_sets``, data, anchor) to known processes, ``targets`` each of them once: each shard mints
        their ids and builds them. Every shard gets every tag set (they are few)."""
        if self.count == 1:
            return self._send(0, lambda token: request(token, new_rows=(rows, tag_sets)), targets=targets)
        by_shard = self._split([row[0] for row in rows])
        if len(by_shard) == 1:
            index = next(iter(by_shard))
            return self._send(index, lambda token: request(token, new_rows=(rows, tag_sets)), targets=targets)

        def part(positions: list[int]) -> Callable[[int], bytes]:
            return lambda token: request(token, new_rows=([rows[at] for at in positions], tag_sets))

        return self._gather(len(rows), {
            index: (positions, self._send(index, part(positions), targets={rows[at][0] for at in positions}))
            for index, positions in by_shard.items()})

    def submit_one_new(self, message: NewMessage) -> Future[Ack]:
        target, tags, data, anchor = message
        return self._send(self.shard_of(target), lambda token: request(
            token, new_rows=([(target, 0, data, anchor)], [tags]), single=True), targets=(target,))

    def release(self, pid: str, to: int) -> Future[dict[str, Any]]:
        """Ask ``pid``'s shard to let go of it from its next slot on; the future gives the signed
        hand-off record. From then on that shard refuses the process's messages (Overloaded)."""
        index = self.shard_of(pid)
        return self._send(index, lambda token: request(token, handoff={
            "kind": "release", "process": pid, "to": self.addresses[to], "to_shard": to}, single=True))

    def adopt(self, to: int, record: str, process_record: bytes) -> Future[dict[str, Any]]:
        """Ask shard ``to`` to take a released process, continuing its slots and hash chain."""
        pid = str(orjson.loads(record)["process"])
        return self._send(to, lambda token: request(token, handoff={
            "kind": "adopt", "record": record, "process_record": process_record.decode()}, single=True),
            targets=(pid,))

    def hold(self, pids: list[str], timeout: float) -> None:
        """Every shard stops pushing ``pids`` to workers (the CU pool moves them), once this returns."""
        self._placing({"hold": pids}, timeout)

    def unhold(self, placements: dict[str, int], workers: int, timeout: float) -> None:
        """Every shard pushes the held ``placements`` to their new workers, once this returns."""
        self._placing({"unhold": placements, "workers": workers}, timeout)
        for index in range(self.count):
            with self._send_locks[index]:
                self._told[index].update(placements)

    def feeds(self, addresses: dict[int, tuple[str, int]]) -> None:
        """Where workers take the shards' pushes, and the pid of each as it said so when it started
        (a TCP feed binds a port of the system's choosing each start): every shard connects there,
        now and after any restart of its own. Not waited on: until a shard knows a worker's feed,
        what it cannot push there it sends as WAKEs."""
        with self._lock:
            self._feed_addresses.update(addresses)
        for index in range(self.count):
            self._tell_feeds(index, addresses)

    def _tell_feeds(self, index: int, addresses: dict[int, tuple[str, int]]) -> None:
        if addresses:
            feeds = {str(worker): address for worker, address in addresses.items()}
            self._send(index, lambda token: orjson.dumps({"t": token, "feeds": feeds}))

    def _placing(self, doc: dict[str, Any], timeout: float) -> None:
        futures = [self._send(index, lambda token: orjson.dumps({"t": token, **doc})) for index in range(self.count)]
        for index, future in enumerate(futures):
            try:
                future.result(timeout)
            except TimeoutError:
                raise Overloaded(f"scheduler shard {index} did not answer a placement within {timeout} s") from None

    def rehosted(self, pid: str, to: int) -> None:
        """Route ``pid``'s messages to shard ``to`` from now on."""
        self._processes[pid] = to
        self._logs.moved(pid)

    def _split(self, targets: list[str]) -> dict[int, list[int]]:
        """Positions of ``targets`` by the shard of each (no method call per message: this runs for each)."""
        shard_of = self._processes.get
        by_shard: dict[int, list[int]] = {}
        for at, target in enumerate(targets):
            index = shard_of(target)
            if index is None:
                raise UnknownProcess(f"no process {target} on this node")
            by_shard.setdefault(index, []).append(at)
        return by_shard

    @staticmethod
    def _gather(size: int, parts: dict[int, tuple[list[int], Future[list[Ack]]]]) -> Future[list[Ack]]:
        """One future of every part's Acks, in the order the items were given. Each shard commits its
        part on its own: when one refuses, the others may still have assigned theirs, so the error
        carries ``acks``, the Acks of what was assigned and None for the rest, which alone is to be
        sent again (each new message gets a new id: sending it all again would assign some twice)."""
        if len(parts) == 1:
            return next(iter(parts.values()))[1]
        combined: Future[list[Ack]] = Future()
        remaining = [len(parts)]
        lock = threading.Lock()

        def done(_: concurrent.futures.Future[list[Ack]]) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0] or combined.done():
                    return
            # Each part's future holds this function, which holds the parts: a cycle that only the
            # garbage collector would free, with every Ack of the batch in it. Emptied here.
            done_parts = list(parts.values())
            parts.clear()
            acks: list[Ack | None] = [None] * size
            failed: BaseException | None = None
            for positions, future in done_parts:
                error = future.exception()
                if error is not None:
                    failed = failed or error
                    continue
                for at, ack in zip(positions, future.result(), strict=True):
                    acks[at] = ack
            if failed is not None:
                failed.acks = acks  # type: ignore[attr-defined]
                failed.add_note(f"{sum(ack is not None for ack in acks)} of {size} messages were assigned; "
                                "the error's acks says which (None: not assigned)")
                combined.set_exception(failed)
                return
            combined.set_result(acks)  # type: ignore[arg-type]

        for _, future in list(parts.values()):  # done() may empty parts as it runs
            future.add_done_callback(done)
        return combined

    def _send(
        self, index: int, make: Callable[[int], bytes], spawned: str | None = None, targets: Iterable[str] = (),
    ) -> Future[Any]:
        if self._stopped.is_set():
            raise NodeStopped("the node's schedulers are closed")
        future: Future[Any] = Future()
        placement, told = self.placement, self._told[index]
        with self._send_locks[index]:  # tokens rise in the order requests enter a shard's socket
            # Placements are read and sent in socket order: a hold sent after this request is read
            # by the shard after it, so a placement it carries can never undo the hold.
            news: dict[str, int] = {}
            for pid in targets:
                if pid not in told:
                    worker = placement(pid)
                    if worker is not None:
                        news[pid] = told[pid] = worker
            with self._lock:
                token = self._next_token
                self._next_token += 1
                self._pending[token] = _Pending(future, index, spawned)
            parts = [make(token), b"%d" % int(self._clock() * 1000)]
            if news:
                parts.append(orjson.dumps(news))
            self._outlets[index].send(pack(REQUEST, parts))
        return future

    # -- shards coming and going ------------------------------------------------------------------
    def wait_ready(self, indexes: Sequence[int], timeout: float) -> None:
        with self._ready_cond:
            if not self._ready_cond.wait_for(lambda: set(indexes) <= self._ready, timeout):
                raise NodeStopped(f"the scheduler shards did not start within {timeout} s (see the log above)")

    def restarted(self, index: int) -> None:
        """Shard ``index`` died and is starting again. Requests still queued for the dead one are
        dropped with its socket, now, before the new one can take them; later ones go to the new one.
        The listener reads every answer the dead one sent, then fails what it had not answered (its
        caller may send it again; what was acknowledged is in its log)."""
        with self._send_locks[index]:
            self._outlets[index].close(linger=0)
            self._outlets[index] = self._connect(index)
            self._told[index].clear()  # the new shard knows no placement yet
            with self._lock:
                self._restarts[index] = self._next_token  # every request before this one went to the dead shard
        with self._lock:
            feeds = dict(self._feed_addresses)
        self._tell_feeds(index, feeds)  # the new shard knows no worker's feed yet

    def _fail_unanswered(self, index: int, before: int) -> None:
        with self._lock:
            lost = [token for token, pending in self._pending.items() if pending.shard == index and token < before]
            failed = [self._pending.pop(token) for token in lost]
        for pending in failed:
            pending.future.set_exception(Overloaded(
                f"scheduler shard {index} restarted before it answered; nothing unanswered was acknowledged: "
                "send it again"))

    def close(self, drain: float = 5.0) -> None:
        """Once the shards have stopped: read their last answers (up to ``drain`` seconds), then fail
        whatever is still unanswered, which they never acknowledged."""
        with self._lock:
            self._answered.wait_for(lambda: not self._pending, drain)
        self._stopped.set()
        self._listener.join()
        for outlet in self._outlets:
            outlet.close(linger=0)
        self._acks.close(linger=0)
        self._context.term()
        with self._lock:
            pending, self._pending = self._pending, {}
        for waiting in pending.values():
            if not waiting.future.done():
                waiting.future.set_exception(NodeStopped("the node closed before its scheduler answered"))

    # -- answers ----------------------------------------------------------------------------------
    def _listen(self) -> None:
        listen(self._acks, self._stopped, self._dispatch, self._between_frames, "schedulers' listener", _POLL_MS)

    def _between_frames(self) -> None:
        with self._lock:
            restarted, self._restarts = self._restarts, {}
        for index, before in restarted.items():  # every answer it sent before it died is read by now
            self._fail_unanswered(index, before)

    def _dispatch(self, frame: bytes) -> None:
        kind, items = unpack(frame)
        if kind == ASSIGNED:
            self._on_assigned(items)
        elif kind == ACKS:
            counters = orjson.loads(items[0])
            self._counters[counters["shard"]] = counters
            for raw in items[1:]:
                self._answer(bytes(raw))
        elif kind == READY:
            with self._ready_cond:
                self._ready.add(int(items[0]))
                self._ready_cond.notify_all()
        else:
            log.error("unknown frame kind %r from a scheduler shard", kind)

    def _answer(self, raw: bytes) -> None:
        token, outcome = read_answer(raw)
        with self._lock:
            pending = self._pending.pop(token, None)
            if not self._pending:
                self._answered.notify_all()
        if pending is None:  # failed already: its shard restarted meanwhile
            return
        if isinstance(outcome, ActoraoError):
            pending.future.set_exception(outcome)
            return
        if pending.spawned is not None:  # known before the spawner hears of it
            self._processes[pending.spawned] = pending.shard
            self._logs.placed(pending.spawned, pending.shard)
        pending.future.set_result(outcome)
