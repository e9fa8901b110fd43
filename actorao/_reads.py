"""The node's read facade: what the edge (``http/``, ``cli.py``, the bench) may ask of a node's
durable state, by name. The edge shapes the answers; it never opens the store, and it never spells
a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from actorao._exceptions import UnknownMessage, UnknownProcess
from actorao.message import is_id
from actorao.persist import MODULE, OWNER, ShardLogs, Store, log_key, split_key

__all__ = ["OWNER", "LogEntry", "NodeReads", "ResultEntry"]

PAGE_BYTES = 8 * 1024 * 1024  # a page stops early past this much message data, and says more follow
_LAST_SLOT = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One slot of a process's log: the message as its module reads it (JSON), and the signed data
    item it came in as (None for a message the node made)."""

    process: str
    slot: int
    entry: bytes
    item: bytes | None

    def doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.entry)
        return doc


@dataclass(frozen=True, slots=True)
class ResultEntry:
    """One stored result, with the slot, timestamp and kind (a cron tick or not) of its message."""

    slot: int
    timestamp: int
    cron: bool
    result: bytes


class NodeReads:
    """Read-only questions about a node's log, results and modules."""

    def __init__(self, store: Store, logs: ShardLogs, knows: Callable[[str], bool]) -> None:
        self._store = store  # results and modules
        self._logs = logs  # the log side, by process: each shard's
        self._knows = knows

    def _known(self, pid: str) -> None:
        if not self._knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")

    # -- the log --------------------------------------------------------------------------------
    def log_page(self, pid: str, after: int | None, last: int | None, limit: int) -> tuple[list[LogEntry], bool]:
        """Slots of ``pid`` after ``after`` up to ``last`` (each end open when None), at most ``limit``
        of them; and whether more follow."""
        self._known(pid)
        found, more = self._logs.log_page(pid, 0 if after is None else after + 1,
                                           _LAST_SLOT if last is None else last, limit, PAGE_BYTES)
        return [LogEntry(pid, slot, entry, item) for slot, entry, item in found], more

    def key_of(self, message_id: str, process: str | None = None) -> bytes:
        """The result key (process ‖ slot) of ``message_id`` in ``process`` (default: where it was first
        assigned); UnknownMessage if it was not assigned there."""
        key = self._logs.assignment_of(message_id, process) if is_id(message_id) else None
        if key is not None:
            return key
        if process is not None and is_id(message_id) and self._logs.assignment_of(message_id) is not None:
            raise UnknownMessage(f"message {message_id} was not assigned to process {process}")
        raise UnknownMessage(f"no message {message_id} was assigned on this node")

    def key_at(self, pid: str, slot: int) -> bytes:
        """The result key of slot ``slot`` of ``pid``; UnknownMessage past its head."""
        if slot > self.head_slot(pid):
            raise UnknownMessage(f"process {pid} has no slot {slot} yet")
        return log_key(pid, slot)

    def message(self, message_id: str, pid: str) -> LogEntry:
        """``message_id`` where it was assigned in ``pid``."""
        self._known(pid)
        key = self.key_of(message_id, pid)
        found = self._logs.entry_with_item(key)
        assert found is not None, "the messages index points into the log"
        return LogEntry(pid, split_key(key)[1], *found)

    def latest(self, pid: str) -> LogEntry:
        self._known(pid)
        head = self._logs.head(pid)
        if head is None:
            raise UnknownProcess(f"process {pid} has no log")
        return self._with_item(pid, *head)

    def spawn(self, pid: str) -> LogEntry:
        """The process's own spawn message, at slot 0."""
        self._known(pid)
        entry = self._logs.log_entry(pid, 0)
        if entry is None:
            raise UnknownProcess(f"process {pid} has no spawn message yet")
        return self._with_item(pid, 0, entry)

    def _with_item(self, pid: str, slot: int, entry: bytes) -> LogEntry:
        return LogEntry(pid, slot, entry, self._logs.signed_item(orjson.loads(entry)["Id"]))

    def find(self, message_id: str) -> LogEntry | None:
        """A message anywhere in the log, where it was first assigned; None if it never was."""
        key = self._logs.assignment_of(message_id) if is_id(message_id) else None
        found = self._logs.entry_with_item(key) if key is not None else None
        if key is None or found is None:
            return None
        return LogEntry(*split_key(key), *found)

    def attestation(self, pid: str, slot: int) -> dict[str, Any] | None:
        """The signed attestation that covers ``slot`` of ``pid``: its document and signature, and the
        ``tail`` of assignments (slot, message, timestamp, hash chain) from after ``slot`` up to the
        attested head, which a verifier needs to follow the chain there."""
        raw = self._logs.attestation_covering(pid, slot)
        if raw is None:
            return None
        record: dict[str, Any] = orjson.loads(raw)
        head = next(entry[1] for entry in orjson.loads(record["doc"])["heads"] if entry[0] == pid)
        tail = []
        for _, entry in self._logs.log_range(pid, slot + 1, head):
            doc = orjson.loads(entry)
            tail.append([doc["Nonce"], doc["Id"], doc["Timestamp"], doc["Hash-Chain"]])
        record["tail"] = tail
        return record

    def process_ids(self) -> list[str]:
        return sorted(self._logs.process_ids())

    def first_slot_after(self, pid: str, timestamp: int) -> int:
        """The first slot of ``pid`` stamped later than ``timestamp`` (one past the head if none is):
        a binary search, since a process's timestamps never go backwards."""
        low, high = 0, self.head_slot(pid)
        while low <= high:
            middle = (low + high) // 2
            if self.timestamp_of(pid, middle) <= timestamp:
                low = middle + 1
            else:
                high = middle - 1
        return low

    def head_slot(self, pid: str) -> int:
        """The last slot of ``pid``'s log (-1 before its spawn is committed)."""
        self._known(pid)
        last = self._logs.last_slot(pid)
        return -1 if last is None else last

    def timestamp_at(self, result_key: bytes) -> int | None:
        """The assignment timestamp (ms) of the slot a result key (``Node.result_key``) names; None if
        that slot is not in the log."""
        pid, slot = split_key(result_key)
        entry = self._logs.log_entry(pid, slot)
        return None if entry is None else int(orjson.loads(entry)["Timestamp"])

    def timestamp_of(self, pid: str, slot: int) -> int:
        entry = self._logs.log_entry(pid, slot)
        if entry is None:
            raise UnknownMessage(f"process {pid} has no slot {slot}")
        return int(orjson.loads(entry)["Timestamp"])

    # -- results --------------------------------------------------------------------------------
    def results(
        self, pid: str, after: int | None, last: int | None, limit: int, ascending: bool, *, cron_only: bool = False,
        errors: bool = True,
    ) -> list[ResultEntry]:
        """The stored results of ``pid`` after slot ``after`` up to slot ``last``, in either order, at
        most ``limit``; ``cron_only`` keeps the results of cron ticks alone, and ``errors=False``
        leaves out the results that are an Error."""
        self._known(pid)
        stamps: dict[int, tuple[int, bool]] = {}

        def keep(slot: int, raw: bytes) -> bool:
            entry = self._logs.log_entry(pid, slot)
            if entry is None:
                return False
            doc = orjson.loads(entry)
            if cron_only and not doc["Cron"]:
                return False
            if not errors and orjson.loads(raw).get("Error") is not None:
                return False
            stamps[slot] = (int(doc["Timestamp"]), bool(doc["Cron"]))
            return True

        found = self._store.result_page(pid, 0 if after is None else after + 1, _LAST_SLOT if last is None else last,
                                        limit, ascending, PAGE_BYTES, keep)
        return [ResultEntry(slot, *stamps[slot], raw) for slot, raw in found]

    def tagged(self, name: str, value: str, limit: int) -> tuple[list[str], list[str]]:
        """Modules and processes indexed with tag ``name`` = ``value`` (``OWNER``: by that owner):
        at most ``limit`` of each."""
        return self._store.tagged(MODULE, name, value, limit), self._logs.tagged_processes(name, value, limit)

    # -- modules --------------------------------------------------------------------------------
    def module_ids(self) -> list[str]:
        return self._store.module_ids()

    def module(self, module_id: str) -> tuple[dict[str, Any], int] | None:
        """A stored module's meta (owner, tags, and the key and signature it was signed with) and size."""
        meta = self._store.module_meta(module_id) if is_id(module_id) else None
        if meta is None:
            return None
        return orjson.loads(meta), self._store.module_size(module_id)

    def checkpoint_bytes(self) -> int:
        return self._store.checkpoint_bytes()

    def checkpoint_count(self) -> int:
        """Checkpoints stored now, every process's (older ones are pruned when a new base is written)."""
        return self._store.checkpoint_count()

    def checkpoints(self, pid: str) -> list[tuple[int, int]]:
        """The slot and size in bytes of each stored checkpoint of ``pid``, oldest first."""
        self._known(pid)
        return self._store.checkpoints_of(pid)
