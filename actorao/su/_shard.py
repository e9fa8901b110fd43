"""A scheduler shard: one OS process that is the SU of a slice of the node's processes, with its own
LMDB environment, its own group commit and its own hash chains.

It takes REQUEST frames from the node, assigns what they carry (minting the ids of new messages and
building their module JSON here, not in the caller), pushes each commit's assignments straight to the
workers of their processes before the commit's fsync (``_feeds.py``), and after it tells those
workers the commit is durable and sends one ACKS frame (every answer of that commit) to the node.
SIGTERM drains: what was taken is assigned and answered, then the shard exits. A shard that is
killed loses nothing it acknowledged, and its successor continues every process's slots and hash chains from the log.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import gc
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import zmq

from actorao import _cpus
from actorao._config import DEFAULT_MAX_MAP_SIZE
from actorao._exceptions import ActoraoError
from actorao._future import Future
from actorao.mailbox import (
    ACKS,
    ASSIGNED,
    READY,
    REQUEST,
    Transport,
    acks_address,
    open_socket,
    pack,
    shard_address,
    unpack,
)
from actorao.message import Message
from actorao.persist import Store, shard_path
from actorao.su._attest import Attester
from actorao.su._feeds import Feeds, Push
from actorao.su._scheduler import SchedulerUnit
from actorao.su._wire import answer, item_from, new_messages
from actorao.supervisor import die_with_parent, start_heartbeat

log = logging.getLogger(__name__)

_POLL_MS = 100


@dataclasses.dataclass(frozen=True, slots=True)
class ShardConfig:
    index: int
    data_path: str
    runtime: str
    identity: str  # the node's: the owner of the messages it sends
    address: str  # this shard's, as Scheduler tags name it
    map_size: int
    max_pending: int
    parent: int  # the node's OS pid
    max_map_size: int = DEFAULT_MAX_MAP_SIZE
    transport: str = "ipc"  # how it reaches the workers' feeds: "ipc", or "tcp" with the cluster key
    key_path: str = ""
    cpus: tuple[int, ...] = ()  # Node.control_cpus: where its threads run; empty: anywhere

    def to_json(self) -> str:
        return orjson.dumps(dataclasses.asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str) -> ShardConfig:
        doc = orjson.loads(text)
        doc["cpus"] = tuple(doc.get("cpus", ()))
        return cls(**doc)


class _Replies:
    """The shard's PUSH to the node and its feeds to the workers: answers and pushes after each commit,
    answers refused before assignment, placements. The shard's one loop uses it; the lock keeps it
    safe for an SU run on a thread of its own."""

    def __init__(self, socket: zmq.Socket[bytes], feeds: Feeds, index: int, su: SchedulerUnit | None = None) -> None:
        self._socket = socket
        self._feeds = feeds
        self._index = index
        self._lock = threading.Lock()
        self._answers: list[bytes] = []
        # This run of the shard, in the machine's monotonic clock: a worker takes a header of a newer
        # epoch as news that the shard restarted, and settles what the older one pushed ahead.
        self._epoch = time.monotonic_ns()
        self.su = su

    def add(self, raw: bytes) -> None:
        with self._lock:
            self._answers.append(raw)

    def place(self, placements: dict[str, int]) -> None:
        with self._lock:
            self._feeds.place(placements)

    def hold(self, pids: list[str]) -> None:
        with self._lock:  # after this, no push of theirs leaves: a commit pushes under this lock
            self._feeds.hold(pids)

    def unhold(self, placements: dict[str, int], workers: int) -> None:
        with self._lock:
            self._feeds.unhold(placements, workers)

    def feeds(self, addresses: dict[int, tuple[str, int]]) -> None:
        with self._lock:
            self._feeds.connect(addresses)

    def flush_behind(self) -> None:
        with self._lock:
            self._feeds.flush_behind()

    def header(self, commit: int) -> bytes:
        """A commit's header, as AHEAD and DURABLE frames carry it: [shard, epoch, first commit, commit];
        the first commit is the last that was durable when this run of the shard started."""
        start = self.su.first_commit if self.su is not None else 0
        return b"[%d,%d,%d,%d]" % (self._index, self._epoch, start, commit)

    def push_ahead(self, pushes: list[Push], commit: int) -> list[Push]:
        """A commit's assignments, to their workers before it syncs; returns those it could not place."""
        with self._lock:
            return self._feeds.push_ahead(pushes, self.header(commit))

    def durable(self, commit: int) -> None:
        with self._lock:
            self._feeds.confirm(self.header(commit))

    def committed(self, pushes: list[Push]) -> None:
        """After each commit of the SU: its answers to the node, in one frame, and its assignments to
        their workers, a frame each; any the shard cannot place go to the node, which routes them."""
        with self._lock:
            answers, self._answers = self._answers, []
            su = self.su
            counters = orjson.dumps({"shard": self._index, "assigned": su.assigned if su else 0,
                                     "commits": su.commits if su else 0})
            if answers:
                self._socket.send(pack(ACKS, [counters, *answers]))
            unplaced = self._feeds.push(pushes) if pushes else ()
            if unplaced:
                self._socket.send(pack(ASSIGNED, [part for _, key, body in unplaced for part in (key, body)]))

    def send(self, kind: bytes, items: list[bytes]) -> None:
        with self._lock:
            self._socket.send(pack(kind, items))

    def close(self) -> None:
        self._feeds.close()
        self._socket.close(linger=5000)  # the last answers reach a node that is still there


class Shard:
    """Turns requests into SU submissions; each future answers into the commit's ACKS frame."""

    def __init__(self, config: ShardConfig, store: Store, replies: _Replies) -> None:
        self.config = config
        self.replies = replies
        self.now_ms = 0  # the node's clock, as its latest request said: assignments are stamped with it
        self.attester = Attester(store, config.address)
        self.su = SchedulerUnit(store, replies.committed, max_pending=config.max_pending,
                                clock=lambda: self.now_ms / 1000, attest=self.attester.attest,
                                sign=self.attester.sign, index=config.index, threaded=False,
                                push_ahead=replies.push_ahead, durable=replies.durable)
        replies.su = self.su

    def take(self, raw: bytes, now_ms: int, placements: bytes | None = None) -> None:
        self.now_ms = max(self.now_ms, now_ms)
        if placements:  # where the processes this request names live: before its commit pushes them
            self.replies.place(orjson.loads(placements))
        doc: dict[str, Any] = orjson.loads(raw)
        token = doc["t"]
        if "hold" in doc or "unhold" in doc or "feeds" in doc:  # the CU pool's news: answered at once
            if "feeds" in doc:
                feeds = doc["feeds"].items()
                self.replies.feeds({int(index): (str(address), int(pid)) for index, (address, pid) in feeds})
            elif "hold" in doc:
                self.replies.hold(doc["hold"])
            else:
                self.replies.unhold(doc["unhold"], int(doc["workers"]))
            self.replies.add(answer(token, {"placed": True}))
            self.replies.committed([])
            return
        try:
            future = self._submit(doc)
        except Exception as exc:  # refused before assignment (or malformed): answered at once
            if not isinstance(exc, ActoraoError):
                log.exception("shard %d: request %s is malformed", self.config.index, token)
            self.replies.add(answer(token, error=exc))
            self.replies.committed([])
            return
        future.add_done_callback(lambda done: self._answered(token, done))

    def _answered(self, token: int, done: concurrent.futures.Future[Any]) -> None:
        error = done.exception()
        self.replies.add(answer(token, error=error) if error is not None else answer(token, done.result()))

    def _submit(self, doc: dict[str, Any]) -> Future[Any]:
        su = self.su
        if "handoff" in doc:
            return su.submit_handoff(doc["handoff"])
        if "new" in doc:  # messages from the node: ids minted here, tags already checked by the node
            return su.submit_new(new_messages(self.config.identity, doc), single=bool(doc.get("single")))
        items = [item_from(item) for item in doc["items"]]
        assign_to = doc.get("assign_to")
        if assign_to is not None:
            message = items[0]
            assert isinstance(message, Message)
            return su.submit_assignment(message, assign_to)
        if doc.get("single"):
            signed = doc.get("signed")
            limits = doc.get("limits")
            return su.submit(items[0], fresh_id=bool(doc.get("fresh")),
                             limits=tuple(limits) if limits is not None else None,  # type: ignore[arg-type]
                             signed=base64.b64decode(signed) if signed is not None else None)
        return su.submit_many([item for item in items if isinstance(item, Message)], fresh_ids=bool(doc.get("fresh")))

    def close(self) -> None:
        self.su.close()


class _Stopping:
    """SIGTERM's handler: it notes the request, and the shard's loop stops after its current commit.
    Python runs a handler between two bytecodes of the main thread, even inside an earlier run of the
    same handler when signals come in a burst (a dying node's, and whoever stops it): so it takes no
    lock. One that did (``threading.Event.set``) could wedge the shard inside a commit, holding LMDB's
    write lock, and the next node on the same folder would wait on it for ever."""

    asked = False

    def __call__(self, signum: int, frame: object) -> None:
        self.asked = True


def run_shard(config: ShardConfig) -> None:
    """The shard process's entry point."""
    _cpus.pin(config.cpus)  # first: every thread started from here on starts there
    stopping = _Stopping()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the node, which stops us
    signal.signal(signal.SIGTERM, stopping)
    die_with_parent(config.parent)
    start_heartbeat()
    store = Store(shard_path(config.data_path, config.index), map_size=config.map_size,
                  max_map_size=config.max_map_size)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    runtime = Path(config.runtime)
    transport = Transport(config.transport, key_path=config.key_path)
    requests = open_socket(context, zmq.PULL, shard_address(runtime, config.index), bind=True)
    replies = _Replies(open_socket(context, zmq.PUSH, acks_address(runtime), bind=False, high_water_mark=0),
                       Feeds(context, runtime, transport.key), config.index)
    shard = Shard(config, store, replies)
    # Every message leaves a few containers behind (its ack, its push, its head's copy), and the
    # shard keeps a head per process: collecting young objects every 700 allocations cost about
    # 5 µs of CPU per message with 10,000 processes. What the shard holds from its start is frozen
    # out of the collector's scans, and young objects are collected every 20,000 allocations.
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)
    replies.send(READY, [str(config.index).encode(), str(os.getpid()).encode()])
    poller = zmq.Poller()
    poller.register(requests, zmq.POLLIN)
    try:
        while not stopping.asked:
            replies.flush_behind()
            if not poller.poll(_POLL_MS):
                continue
            while shard.su.queued < shard.su.max_batch:  # then commit: a flood is taken a batch at a time
                try:
                    frame = requests.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                kind, items = unpack(frame)
                if kind != REQUEST or len(items) not in (2, 3):
                    log.error("shard %d: unknown frame kind %r", config.index, kind)
                    continue
                shard.take(bytes(items[0]), int(items[1]), bytes(items[2]) if len(items) == 3 else None)
            shard.su.assign_queued()  # one group commit of everything taken, on this thread
    finally:
        # Stopping already: a later SIGTERM changes nothing. Ignored, it stays ignored while the
        # interpreter exits, where Python puts the default action back for a handler of its own, and
        # one more SIGTERM of a burst would kill the shard then (status -15, not 0).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        shard.close()  # assigns and answers everything taken
        requests.close(linger=0)
        replies.close()
        context.term()
        store.close()


__all__ = ["Shard", "ShardConfig", "run_shard"]
