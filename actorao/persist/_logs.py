"""The logs of a node's scheduler shards: one LMDB environment per shard, each holding the log, the
messages index, the signed items and the process records of the processes that shard schedules.

Shard 0's environment is the node's own (``<data>/db``), so a node with one shard keeps the layout a
node always had; shard k > 0 lives in ``<data>/shards/<k>/db``. A process lives in the shard whose
``processes`` database holds it; which one is found on first use and remembered.
"""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

from actorao._config import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE
from actorao.persist._store import PROCESS, Store, split_key

__all__ = ["ShardLogs", "shard_path"]


def shard_path(data_path: str | Path, index: int) -> Path:
    """Where shard ``index`` keeps its environment."""
    return Path(data_path) if index == 0 else Path(data_path) / "shards" / str(index)


def existing_shards(data_path: str | Path) -> int:
    """How many shards a data path already has (at least 1: shard 0 is the node's own store)."""
    folder = Path(data_path) / "shards"
    numbers = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(numbers, default=0) + 1


class ShardLogs:
    """The log side of every shard, by process: ``of(pid)`` is the store that holds ``pid``'s log."""

    def __init__(self, main: Store, count: int, *, map_size: int = DEFAULT_MAP_SIZE, metasync: bool = True,
                 max_map_size: int = DEFAULT_MAX_MAP_SIZE) -> None:
        self.main = main
        self.stores = [main] + [
            Store(shard_path(main.path, index), map_size=map_size, metasync=metasync, max_map_size=max_map_size)
            for index in range(1, count)
        ]
        self._segments: dict[str, list[tuple[int, int]]] = {}
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.stores)

    def close(self) -> None:
        """Close the shard environments (not the main one, which its owner closes)."""
        for store in self.stores[1:]:
            store.close()

    def tagged_processes(self, name: str, value: str, limit: int) -> list[str]:
        """Processes spawned with tag ``name`` = ``value`` (``OWNER``: by that owner), at most ``limit``."""
        found: list[str] = []
        for store in self.stores:
            found += store.tagged(PROCESS, name, value, limit - len(found))
        return found

    def index_existing(self) -> None:
        for store in self.stores:
            store.index_existing()

    def reader_check(self) -> None:
        for store in self.stores:
            store.reader_check()

    # -- where a process lives ------------------------------------------------------------------
    # A process's log can span shards: a hand-off record (in both shards' stores) says from which slot
    # the next shard schedules it. Its segments, (first slot, shard) oldest first, are read once and
    # checked against the current shard's hand-offs whenever the log is read, so a store that is
    # behind (a worker's) catches up by itself.
    def segments(self, pid: str) -> list[tuple[int, int]]:
        """(first slot, shard) of each stretch of ``pid``'s log, oldest first; [] if no shard has it."""
        cached = self._segments.get(pid)
        if cached is not None:
            first, index = cached[-1]
            if all(slot <= first for slot, _ in self.stores[index].handoffs(pid)):
                return cached
        found: dict[int, dict[str, int]] = {}
        for store in self.stores:
            found.update((slot, orjson.loads(raw)) for slot, raw in store.handoffs(pid))
        if found:
            ordered = sorted(found.items())
            segments = [(0, ordered[0][1]["from_shard"])] + [(slot, record["to_shard"]) for slot, record in ordered]
        else:
            owner = next((index for index, store in enumerate(self.stores) if store.process_record(pid)), None)
            segments = [] if owner is None else [(0, owner)]
        if segments:
            with self._lock:
                self._segments[pid] = segments
        return segments

    def shard_of(self, pid: str) -> int | None:
        """The shard that schedules ``pid`` now."""
        segments = self.segments(pid)
        return segments[-1][1] if segments else None

    def of(self, pid: str) -> Store | None:
        index = self.shard_of(pid)
        return None if index is None else self.stores[index]

    def _holding(self, pid: str, slot: int) -> Store | None:
        """The store whose log holds ``slot`` of ``pid``."""
        found = None
        for first, index in self.segments(pid):
            if first > slot:
                break
            found = self.stores[index]
        return found

    def _stretches(self, pid: str, first: int, last: int) -> list[tuple[Store, int, int]]:
        """(store, first, last) of each shard's part of slots first..last of ``pid``."""
        segments = self.segments(pid)
        out = []
        for number, (start, index) in enumerate(segments):
            end = segments[number + 1][0] - 1 if number + 1 < len(segments) else (1 << 64) - 1
            low, high = max(first, start), min(last, end)
            if low <= high:
                out.append((self.stores[index], low, high))
        return out

    def placed(self, pid: str, index: int) -> None:
        """``pid`` was just spawned on shard ``index``."""
        with self._lock:
            self._segments[pid] = [(0, index)]

    def moved(self, pid: str) -> None:
        """``pid`` was just handed to another shard: read its segments again."""
        with self._lock:
            self._segments.pop(pid, None)

    def process_ids(self) -> dict[str, int]:
        """Every process, with the shard that schedules it now."""
        found: dict[str, int] = {}
        for store in self.stores:
            for pid in store.process_ids():
                found.setdefault(pid, -1)
        return {pid: index for pid in found if (index := self.shard_of(pid)) is not None}

    def unadopted(self) -> list[tuple[str, int, bytes, bytes]]:
        """Hand-offs released and never adopted (the node stopped between the two): each process, the
        shard it was released to, the signed record, and its process record from the shard that let
        it go."""
        found = []
        for pid, index in self.process_ids().items():
            if self.stores[index].process_record(pid) is not None:
                continue
            for store in self.stores:
                handoffs, record = store.handoffs(pid), store.process_record(pid)
                if handoffs and record is not None and orjson.loads(handoffs[-1][1])["to_shard"] == index:
                    found.append((pid, index, handoffs[-1][1], record))
                    break
        return found

    # -- the log side of persist's named operations, routed ---------------------------------------
    def process_record(self, pid: str) -> bytes | None:
        store = self.of(pid)
        return None if store is None else store.process_record(pid)

    def log_entry(self, pid: str, slot: int) -> bytes | None:
        store = self._holding(pid, slot)
        return None if store is None else store.log_entry(pid, slot)

    def head(self, pid: str) -> tuple[int, bytes] | None:
        for first, index in reversed(self.segments(pid)):  # a shard that just took it has no entry yet
            head = self.stores[index].head(pid)
            if head is not None and head[0] >= first:
                return head
        return None

    def last_slot(self, pid: str) -> int | None:
        head = self.head(pid)
        return None if head is None else head[0]

    def log_range(self, pid: str, first: int, last: int) -> list[tuple[int, bytes]]:
        return [entry for store, low, high in self._stretches(pid, first, last)
                for entry in store.log_range(pid, low, high)]

    def logged(self, shard: int, commit: int, entries: dict[str, list[tuple[int, bytes]]]) -> bool | None:
        """Whether shard ``shard``'s log holds ``entries`` (process -> (slot, message)) as its commit
        ``commit`` wrote them; None while it holds no commit of that number."""
        store = self.stores[shard]
        if store.last_commit() < commit:
            return None
        return all(store.log_entry(pid, slot) == body for pid, found in entries.items() for slot, body in found)

    def log_page(
        self, pid: str, first: int, last: int, limit: int, max_bytes: int
    ) -> tuple[list[tuple[int, bytes, bytes | None]], bool]:
        out: list[tuple[int, bytes, bytes | None]] = []
        stretches = self._stretches(pid, first, last)
        for number, (store, low, high) in enumerate(stretches):
            found, more = store.log_page(pid, low, high, limit - len(out), max_bytes)
            out += found
            if more:
                return out, True
            if len(out) >= limit:  # full: more follow if a later stretch holds any entry
                return out, any(later.log_page(pid, start, end, 0, max_bytes)[1]
                                for later, start, end in stretches[number + 1:])
        return out, False

    def entry_at(self, key: bytes) -> bytes | None:
        store = self._holding(*split_key(key))
        return None if store is None else store.entry_at(key)

    def entry_with_item(self, key: bytes) -> tuple[bytes, bytes | None] | None:
        store = self._holding(*split_key(key))
        return None if store is None else store.entry_with_item(key)

    def assignment_of(self, message_id: str, process: str | None = None) -> bytes | None:
        """The result key of ``message_id`` in ``process`` (the shards that held its log are asked), or
        where it was first assigned (every shard is asked)."""
        if process is not None:
            for index in dict.fromkeys(index for _, index in self.segments(process)):
                key = self.stores[index].assignment_of(message_id, process)
                if key is not None and split_key(key)[0] == process:
                    return key
            return None
        for store in self.stores:
            key = store.assignment_of(message_id)
            if key is not None:
                return key
        return None

    def attestation_covering(self, pid: str, slot: int) -> bytes | None:
        store = self._holding(pid, slot)
        return None if store is None else store.attestation_covering(pid, slot)

    def signed_item(self, item_id: str) -> bytes | None:
        for store in self.stores:
            item = store.signed_item(item_id)
            if item is not None:
                return item
        return None
