"""Cron: processes spawned with a Cron-Interval get a tick message at that interval.

A tick is assigned into the log like any message, so its order among the others is the SU's, and
every replay sees it where it was. Tick k of a process is due at its spawn's timestamp plus k
intervals, and its id is derived from (process, k): assigning it twice assigns it once.

Catch-up after a restart: the ticks that fell due while the node was down are assigned at once, in
order, but at most ``catch_up`` of them (the most recent); older missed ticks are skipped, and the
log says how many. A tick carries the process's Cron-Tag-* tags without the prefix (Cron-Tag-Action:
Tick gives Action: Tick), and "Cron": true.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import orjson

from actorao._config import DEFAULT_CATCH_UP
from actorao._exceptions import ActoraoError, InvalidMessage
from actorao.message import Message, Tag, encode_id, tag_value, with_ao_tags
from actorao.persist import ShardLogs
from actorao.su import Schedulers
from actorao.supervisor import ThreadChild

log = logging.getLogger(__name__)

_SUBMIT_WAIT = 30.0  # seconds to wait for the ticks' acknowledgement before offering them again

_UNITS = {"millisecond": 1, "second": 1000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000,
          "week": 604_800_000, "month": 2_592_000_000, "year": 31_536_000_000}
_INTERVAL = re.compile(r"(\d+)-(millisecond|second|minute|hour|day|week|month|year)s?")


def parse_interval(text: str) -> int:
    """ao's Cron-Interval, such as "10-seconds" or "1-minute", in milliseconds."""
    match = _INTERVAL.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise InvalidMessage("Tags['Cron-Interval']", f"expected a count and a unit like '10-seconds', got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def tick_id(pid: str, number: int) -> str:
    return encode_id(hashlib.sha256(f"cron|{pid}|{number}".encode()).digest())


@dataclass(slots=True)
class _Schedule:
    pid: str
    start: int  # the spawn's timestamp, in ms
    interval: int  # ms
    tags: tuple[Tag, ...]
    next_tick: int  # the number of the next tick to assign


class Cron(ThreadChild):
    """The node's cron thread: assigns each process's due ticks. A supervised child, like the SU."""

    def __init__(self, logs: ShardLogs, identity: str, scheduler: Callable[[], Schedulers],
                 processes: Callable[[], AbstractSet[str]], catch_up: int = DEFAULT_CATCH_UP,
                 clock: Callable[[], float] = time.time) -> None:
        self.logs = logs
        self.identity = identity
        self._scheduler = scheduler
        self._catch_up = catch_up
        self._clock = clock
        self._schedules: dict[str, _Schedule] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._processes = processes
        self._checked: set[str] = set()
        self._discover()
        self._start_thread("cron")

    @property
    def scheduled(self) -> int:
        """How many processes get cron ticks."""
        with self._lock:
            return len(self._schedules)

    def _discover(self) -> None:
        """Look at processes spawned since the last look (by the API or by other processes). Each look
        is a set difference: a node of 10,000 processes looks every second."""
        for pid in self._processes() - self._checked:
            self._checked.add(pid)
            self.add(pid)

    def add(self, pid: str) -> None:
        """Start ticking ``pid`` if its spawn asked for it."""
        spawn = self.logs.log_entry(pid, 0)
        if spawn is None:
            self._checked.discard(pid)  # not committed yet: look again next time
            return
        if b"Cron-Interval" not in spawn:  # most spawns: no need to parse it (the log's JSON escapes no letter)
            return
        doc = orjson.loads(spawn)
        tags = tuple((tag["name"], tag["value"]) for tag in doc["Tags"])
        interval = tag_value(tags, "Cron-Interval")
        if interval is None:
            return
        tick_tags = tuple((name[len("Cron-Tag-"):], value) for name, value in tags if name.startswith("Cron-Tag-"))
        schedule = _Schedule(pid, int(doc["Timestamp"]), parse_interval(interval), tick_tags, 1)
        due = self._due(schedule, int(self._clock() * 1000))
        if due - schedule.next_tick + 1 > self._catch_up:
            skipped = due - self._catch_up + 1 - schedule.next_tick
            log.warning("cron: %s missed %d ticks while the node was down; catching up the last %d",
                        pid, due - schedule.next_tick + 1, self._catch_up)
            schedule.next_tick += skipped
        with self._lock:
            self._schedules[pid] = schedule
        self._wake.set()

    @staticmethod
    def _due(schedule: _Schedule, now: int) -> int:
        """The number of the last tick due at ``now`` (0 when none is)."""
        return max(0, (now - schedule.start) // schedule.interval)

    def _serve(self) -> None:
        while not self._stopping:
            self._discover()
            now = int(self._clock() * 1000)
            wait = 1.0
            with self._lock:
                schedules = list(self._schedules.values())
            for schedule in schedules:
                due = self._due(schedule, now)
                if due >= schedule.next_tick:
                    self._assign(schedule, due)
                next_at = schedule.start + schedule.next_tick * schedule.interval
                wait = min(wait, max(0.0, (next_at - now) / 1000))
            self._wake.wait(wait)
            self._wake.clear()

    def _assign(self, schedule: _Schedule, due: int) -> None:
        ticks = [
            Message(tick_id(schedule.pid, number), self.identity, schedule.pid,
                    with_ao_tags(schedule.tags, "Message"), "", "", cron=True)
            for number in range(schedule.next_tick, due + 1)
        ]
        try:  # ids seen before are assigned once, never twice
            self._scheduler().submit_many(ticks).result(_SUBMIT_WAIT)
        except ActoraoError as exc:  # pushed back: the same ticks are offered next time round
            log.warning("cron: ticks for %s not assigned yet: %s", schedule.pid, exc)
            return
        schedule.next_tick = due + 1

    # -- as a supervised child ------------------------------------------------------------------
    def stop(self, timeout: float | None) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
