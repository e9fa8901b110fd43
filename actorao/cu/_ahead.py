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
before its DURABLE. A push that hears nothing while the worker has listened for ``patience`` seconds
with nothing left in its sockets (``drained``: its DURABLE was lost with a shard that is not pushing to
this worker again, not merely queued behind a flood) is settled from the shard's log itself, once the log
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
from actorao.persist import ShardLogs

Key = tuple[int, int, int]  # shard, epoch, commit


@dataclasses.dataclass(slots=True)
class _Push:
    entries: dict[str, list[tuple[int, bytes]]]  # process -> (slot, message JSON), in order
    taken_at: float  # host time, for ``patience`` only


def by_process(items: list[bytes]) -> dict[str, list[tuple[int, bytes]]]:
    """An ASSIGN or AHEAD frame's (log key, message) items as each process's (slot, message), in order.
    A log key is the process id and the slot in 8 bytes (``persist.log_key``), read here inline:
    every assignment a worker takes passes through this loop."""
    entries: dict[str, list[tuple[int, bytes]]] = {}
    get, slot_of = entries.get, int.from_bytes
    for key, body in zip(items[0::2], items[1::2], strict=True):
        pid = str(key[:-8], "utf-8")
        found = get(pid)
        if found is None:
            entries[pid] = [(slot_of(key[-8:], "big"), bytes(body))]
        else:
            found.append((slot_of(key[-8:], "big"), bytes(body)))
    return entries


class _AheadOverlay:
    """Reads of the logs below it in the MRO (``ShardLogs``, or ``RemoteLogs`` over the network), with
    the entries pushed ahead and not yet confirmed read as if they were in them. The main thread adds
    and drops whole pushes, as ``by_process`` made them: nothing is done per process, as a push may
    name thousands of them and few are ever read from here (a replay, a catch-up, WeaveDrive). Those
    reads look through the few pushes not yet settled. Evaluation threads read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pushes: dict[Key, dict[str, list[tuple[int, bytes]]]] = {}
        self._ahead_lock = threading.Lock()

    def add_ahead(self, key: Key, entries: dict[str, list[tuple[int, bytes]]]) -> None:
        """Push ``key``'s entries, by process."""
        with self._ahead_lock:
            self._pushes[key] = entries

    def drop_ahead(self, key: Key) -> None:
        """Push ``key``, settled: its entries are in the log now, or void."""
        with self._ahead_lock:
            self._pushes.pop(key, None)

    def _ahead_of(self, pid: str) -> dict[int, bytes]:
        # Taken before the log is read: an entry dropped from here once its commit is confirmed is in
        # the log for any read that starts after.
        with self._ahead_lock:
            found = [entries[pid] for entries in self._pushes.values() if pid in entries]
        merged: dict[int, bytes] = {}
        for entries in found:
            merged.update(entries)
        return merged

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
    thread that commits its own turn (``_Direct`` in ``cu/_worker.py``): always under ``_Direct.lock``.

    A turn needs every push ahead its process had taken when the turn ended. The book keeps one key a
    process for that, the newest push naming it (``_newest``), and does no other work per process and
    push: the pushes of one run of a shard are settled in the order of their numbers (a DURABLE confirms
    every one up to its number, a newer run settles all of an older run's, and the log settles them in
    the order they came), so the newest one settled means every earlier one is. Two exceptions: a process
    re-hosted to another shard may have pushes of both not yet settled (the older shard's wait in
    ``_others``), and a void push may leave earlier ones that are not (its processes look again)."""

    def __init__(
        self, logs: AheadLogs | RemoteAheadLogs, *, patience: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logs = logs
        self.patience = patience
        self._clock = clock
        self._epochs: dict[int, int] = {}  # shard -> the newest epoch heard from
        self._pending: dict[Key, _Push] = {}  # in the order they came
        self._newest: dict[str, Key] = {}  # process -> the newest push ahead naming it, not yet settled
        self._others: dict[str, set[Key]] = {}  # process -> pushes of other shards or runs, not yet settled
        self._held: list[tuple[Finished, tuple[Key, ...]]] = []
        self._waiting: set[str | None] = set()  # processes with a held turn: their later turns wait behind it
        self._moved = False  # a push was confirmed or voided since the last scan of every held turn
        self._drained = clock()  # when the worker last found nothing more waiting in its sockets
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
        self._logs.add_ahead(key, entries)
        newest, shard, epoch = self._newest, key[0], key[1]
        for pid in entries:
            found = newest.get(pid)
            if found is not None and (found[0] != shard or found[1] != epoch):  # re-hosted, not yet settled
                self._others.setdefault(pid, set()).add(found)
            newest[pid] = key
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

    def drained(self) -> None:
        """The worker took every frame that waited for it: what it has not heard yet was not sent."""
        self._drained = self._clock()

    def check_logs(self) -> set[str]:
        """Settle from the logs the pushes that heard nothing from their shard for ``patience`` while
        the worker listened: those taken ``patience`` before it last took every frame that waited. A
        worker that is behind its feed reads its DURABLEs there, and reads no log. Returns the
        processes to forget."""
        void: set[str] = set()
        heard_all = self._drained
        for key, push in list(self._pending.items()):
            if heard_all - push.taken_at >= self.patience:
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
        void = set(self._settle(key, void=True).entries)
        self.forgetting |= void
        self._held = [(turn, needs) for turn, needs in self._held if turn.process not in void]
        return void

    def _settle(self, key: Key, *, void: bool = False) -> _Push:
        """Take push ``key`` off the book, confirmed or void: its entries are no longer read from here."""
        push = self._pending.pop(key)
        self._moved = True
        self._logs.drop_ahead(key)
        newest, others = self._newest, self._others
        for pid in push.entries:
            if void:  # earlier pushes naming it, of this shard or another, may not be settled
                self._look_again(pid)
            elif newest.get(pid) == key:  # every earlier push of this run of the shard is settled too
                if others and pid in others:
                    self._look_again(pid)
                else:
                    del newest[pid]
            elif others:
                keys = others.get(pid)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del others[pid]
        return push

    def _look_again(self, pid: str) -> None:
        """``pid``'s newest push and others, from the pushes not yet settled (rare: a void push, or a
        re-host)."""
        keys = [key for key, push in self._pending.items() if pid in push.entries]
        self._others.pop(pid, None)
        if not keys:
            self._newest.pop(pid, None)
            return
        last = self._newest[pid] = keys[-1]
        rest = {key for key in keys if key[:2] != last[:2]}
        if rest:
            self._others[pid] = rest

    def _needs(self, pid: str | None) -> tuple[Key, ...]:
        """The pushes a turn of ``pid`` that ends now waits for: none, or its newest (and others')."""
        key = None if pid is None else self._newest.get(pid)
        if key is None:
            return ()
        others = self._others.get(pid) if self._others and pid is not None else None
        return (key, *others) if others else (key,)

    def settle(self, finished: list[Finished]) -> list[Finished]:
        """Take turns as the lanes finish them; return those (and earlier held ones) that may be
        committed and reported now, in order. The held turns are looked at again only when a push was
        settled since: the main thread calls this after every turn, and with many processes thousands
        of turns may wait on one commit's sync."""
        fresh: list[tuple[Finished, tuple[Key, ...]]] = []
        forgetting = self.forgetting
        for turn in finished:
            pid = turn.process
            if forgetting and pid in forgetting:
                if not turn.forgot:
                    continue  # ran on a state that is forgotten: its work is done again after
                forgetting.discard(pid)  # type: ignore[arg-type]
            fresh.append((turn, self._needs(pid)))
        if self._moved:
            self._held += fresh
            return self.release()
        ready: list[Finished] = []
        waiting = self._waiting
        for turn, needs in fresh:
            if needs or turn.process in waiting:  # a process's newest push is never settled: it waits
                self._held.append((turn, needs))
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
        kept: list[tuple[Finished, tuple[Key, ...]]] = []
        pending = self._pending
        for turn, needs in self._held:
            if turn.process in waiting or (needs and _any_in(needs, pending)):
                kept.append((turn, needs))
                waiting.add(turn.process)
            else:
                ready.append(turn)
        self._held = kept
        return ready


def _any_in(keys: tuple[Key, ...], pending: dict[Key, _Push]) -> bool:
    if keys[0] in pending:
        return True
    return len(keys) > 1 and any(key in pending for key in keys[1:])


__all__ = ["Ahead", "AheadLogs", "RemoteAheadLogs", "by_process"]
