"""Assignments a worker takes ahead of their commit's fsync, and the results it holds back meanwhile.

A scheduler shard pushes each commit's assignments before it syncs the commit (an AHEAD frame), and
says when the sync is done (a DURABLE frame with the same header: shard, epoch, first commit, commit).
The worker evaluates at once, so the fsync and the evaluation overlap, but it commits and reports
nothing that depends on an assignment not yet durable: each turn's results, checkpoints and replies
wait here until every push ahead its process had taken when the turn ended is confirmed. So the
messenger, waiters, result reads and cron only ever see results of durable slots.

Until then the pushed entries are readable through ``AheadLogs``, as if in the log: a rollback or a
WeaveDrive read in the same commit finds them. A push ahead that is never confirmed is void:
- the same shard run sends the same commit number again (its commit failed, and the next one takes
  the number), or
- a newer run of the shard (a greater epoch) says its first commit, the last durable one when it
  started, is below the push's number: the shard died before the commit was on disk.
A newer run whose first commit is at or above the number confirms it: the shard died after the sync,
before its DURABLE. A push that hears nothing for ``patience`` seconds (its DURABLE was lost with a
shard that is not pushing to this worker again) is settled from the shard's log itself, once the log
holds a commit of its number: confirmed if its entries are there, void if not. The worker forgets each
process of a void push (its state ran ahead on an assignment that does not exist), drops its held
results, and loads it again from checkpoint and log.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from actorao.cu._lanes import Finished
from actorao.cu._remote import RemoteLogs
from actorao.persist import ShardLogs, split_key

Key = tuple[int, int, int]  # shard, epoch, commit


@dataclasses.dataclass(slots=True)
class _Push:
    entries: dict[str, list[tuple[int, bytes]]]  # process -> (slot, message JSON), in order
    taken_at: float  # host time, for ``patience`` only


def by_process(items: list[bytes]) -> dict[str, list[tuple[int, bytes]]]:
    """An ASSIGN or AHEAD frame's (log key, message) items as each process's (slot, message), in order."""
    entries: dict[str, list[tuple[int, bytes]]] = {}
    for at in range(0, len(items), 2):
        pid, slot = split_key(bytes(items[at]))
        found = entries.get(pid)
        if found is None:
            entries[pid] = [(slot, bytes(items[at + 1]))]
        else:
            found.append((slot, bytes(items[at + 1])))
    return entries


class _AheadOverlay:
    """Reads of the logs below it in the MRO (``ShardLogs``, or ``RemoteLogs`` over the network), with
    the entries pushed ahead and not yet confirmed read as if they were in them. The main thread adds
    and drops them; evaluation threads read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ahead: dict[str, dict[int, bytes]] = {}
        self._ahead_lock = threading.Lock()

    def add_ahead(self, entries: dict[str, list[tuple[int, bytes]]]) -> None:
        """A push's entries, by process (one lock for all: a push may name thousands of processes)."""
        with self._ahead_lock:
            ahead = self._ahead
            for pid, found in entries.items():
                mine = ahead.get(pid)
                if mine is None:
                    ahead[pid] = dict(found)
                else:
                    mine.update(found)

    def drop_ahead(self, entries: dict[str, list[tuple[int, bytes]]]) -> None:
        """A settled push's entries: in the log now, or void."""
        with self._ahead_lock:
            ahead = self._ahead
            for pid, dropped in entries.items():
                found = ahead.get(pid)
                if found is not None:
                    for slot, _ in dropped:
                        found.pop(slot, None)
                    if not found:
                        del ahead[pid]

    def _ahead_of(self, pid: str) -> dict[int, bytes]:
        # Taken before the log is read: an entry dropped from here once its commit is confirmed is in
        # the log for any read that starts after.
        with self._ahead_lock:
            found = self._ahead.get(pid)
            return dict(found) if found else {}

    def log_entry(self, pid: str, slot: int) -> bytes | None:
        ahead = self._ahead_of(pid).get(slot)
        return ahead if ahead is not None else super().log_entry(pid, slot)  # type: ignore[misc]

    def last_slot(self, pid: str) -> int | None:
        ahead = self._ahead_of(pid)
        last: int | None = super().last_slot(pid)  # type: ignore[misc]
        if ahead:
            return max(max(ahead), -1 if last is None else last)
        return last

    def log_range(self, pid: str, first: int, last: int) -> list[tuple[int, bytes]]:
        ahead = self._ahead_of(pid)
        entries: list[tuple[int, bytes]] = super().log_range(pid, first, last)  # type: ignore[misc]
        if not ahead:
            return entries
        merged = dict(entries)
        merged.update((slot, body) for slot, body in ahead.items() if first <= slot <= last)
        return sorted(merged.items())


class AheadLogs(_AheadOverlay, ShardLogs):
    """The shards' logs on this machine's disk, read with the entries pushed ahead."""


class RemoteAheadLogs(_AheadOverlay, RemoteLogs):
    """The shards' logs read from the node over the network (``RemoteLogs``), with the entries pushed ahead."""


class Ahead:
    """The worker's book of pushes ahead and held turns. Used by the main thread, and by an evaluation
    thread that commits its own turn (``_Direct`` in ``cu/_worker.py``): always under ``_Direct.lock``."""

    def __init__(
        self, logs: AheadLogs | RemoteAheadLogs, *, patience: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logs = logs
        self.patience = patience
        self._clock = clock
        self._epochs: dict[int, int] = {}  # shard -> the newest epoch heard from
        self._pending: dict[Key, _Push] = {}
        self._pending_of: dict[str, set[Key]] = {}  # process -> its pushes ahead not yet confirmed
        self._held: list[tuple[Finished, frozenset[Key]]] = []
        self._waiting: set[str | None] = set()  # processes with a held turn: their later turns wait behind it
        self._moved = False  # a push was confirmed or voided since the last scan of every held turn
        self.forgetting: set[str] = set()  # forgotten: turns of theirs until the forgetting one are dropped

    @property
    def holding(self) -> int:
        return len(self._held)

    def took(self, header: bytes, items: list[bytes]) -> tuple[dict[str, list[tuple[int, bytes]]], set[str]] | None:
        """An AHEAD frame: its entries by process, and the processes to forget first; None when it
        comes from a run of its shard that is gone (its entries, if durable, are in the log)."""
        heard = self._heard(header)
        if heard is None:
            return None
        key, void = heard
        for older in [pending for pending in self._pending if pending[:2] == key[:2] and pending[2] >= key[2]]:
            void |= self._void(older)  # the same number again: the commit that pushed it failed
        entries = by_process(items)
        self._pending[key] = _Push(entries, self._clock())
        self._logs.add_ahead(entries)
        pending_of = self._pending_of
        for pid in entries:
            keys = pending_of.get(pid)
            if keys is None:
                pending_of[pid] = {key}
            else:
                keys.add(key)
        return entries, void

    def confirmed(self, header: bytes) -> set[str]:
        """A DURABLE frame: every push ahead of that run of the shard up to its commit is durable.
        Returns the processes to forget (pushes of an older run found void)."""
        heard = self._heard(header)
        if heard is None:
            return set()
        key, void = heard
        for done in [pending for pending in self._pending if pending[:2] == key[:2] and pending[2] <= key[2]]:
            self._confirm(done)
        return void

    def check_logs(self) -> set[str]:
        """Settle from the logs the pushes that waited ``patience`` for a word from their shard; returns
        the processes to forget."""
        void: set[str] = set()
        now = self._clock()
        for key, push in list(self._pending.items()):
            if now - push.taken_at >= self.patience:
                logged = self._logs.logged(key[0], key[2], push.entries)
                if logged:
                    self._confirm(key)
                elif logged is not None:
                    void |= self._void(key)
        return void

    def _heard(self, header: bytes) -> tuple[Key, set[str]] | None:
        shard, epoch, first, commit = orjson.loads(header)
        known = self._epochs.get(shard)
        if known is not None and epoch < known:
            return None
        void: set[str] = set()
        if known is None or epoch > known:  # a new run of the shard: settle what the old ones pushed ahead
            self._epochs[shard] = epoch
            for old in [pending for pending in self._pending if pending[0] == shard and pending[1] < epoch]:
                if old[2] <= first:
                    self._confirm(old)
                else:
                    void |= self._void(old)
        return (shard, epoch, commit), void

    def _confirm(self, key: Key) -> None:
        self._settle(key)  # its entries are in the log now

    def _void(self, key: Key) -> set[str]:
        void = set(self._settle(key).entries)
        self.forgetting |= void
        self._held = [(turn, needs) for turn, needs in self._held if turn.process not in void]
        return void

    def _settle(self, key: Key) -> _Push:
        """Take push ``key`` off the book, confirmed or void: its entries are no longer read from here."""
        push = self._pending.pop(key)
        self._moved = True
        self._logs.drop_ahead(push.entries)
        for pid in push.entries:
            keys = self._pending_of.get(pid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._pending_of[pid]
        return push

    def settle(self, finished: list[Finished]) -> list[Finished]:
        """Take turns as the lanes finish them; return those (and earlier held ones) that may be
        committed and reported now, in order. The held turns are looked at again only when a push was
        settled since: the main thread calls this after every turn, and with many processes thousands
        of turns may wait on one commit's sync."""
        fresh: list[tuple[Finished, frozenset[Key]]] = []
        for turn in finished:
            pid = turn.process
            if pid in self.forgetting:
                if not turn.forgot:
                    continue  # ran on a state that is forgotten: its work is done again after
                self.forgetting.discard(pid)
            needs = self._pending_of.get(pid) if pid is not None else None
            fresh.append((turn, frozenset(needs) if needs else frozenset()))
        if self._moved:
            self._held += fresh
            return self.release()
        ready: list[Finished] = []
        pending, waiting = self._pending, self._waiting
        for turn, keys in fresh:
            if turn.process in waiting or any(key in pending for key in keys):
                self._held.append((turn, keys))
                waiting.add(turn.process)
            else:
                ready.append(turn)
        return ready

    def release(self) -> list[Finished]:
        """Every held turn whose pushes are all settled, in order (a process's turns go out in order)."""
        ready: list[Finished] = []
        self._moved = False
        waiting: set[str | None] = set()
        self._waiting = waiting
        if not self._held:
            return ready
        kept: list[tuple[Finished, frozenset[Key]]] = []
        pending = self._pending
        for turn, needs in self._held:
            if turn.process in waiting or any(key in pending for key in needs):
                kept.append((turn, needs))
                waiting.add(turn.process)
            else:
                ready.append(turn)
        self._held = kept
        return ready


__all__ = ["Ahead", "AheadLogs", "RemoteAheadLogs", "by_process"]
