"""The logs of a node's scheduler shards: one LMDB environment per shard, each holding the log, the
messages index, the signed items and the process records of the processes that shard schedules.

Shard 0's environment is the node's own (``<data>/db``), so a node with one shard keeps the layout a
node always had; shard k > 0 lives in ``<data>/shards/<k>/db``. A process lives in the shard whose
``processes`` database holds it; which one is found on first use and remembered.
"""

from __future__ import annotations

import threading
from pathlib import Path

from actorao._config import DEFAULT_MAP_SIZE
from actorao.persist._store import Store, split_key

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

    def __init__(self, main: Store, count: int, *, map_size: int = DEFAULT_MAP_SIZE, metasync: bool = True) -> None:
        self.main = main
        self.stores = [main] + [
            Store(shard_path(main.path, index), map_size=map_size, metasync=metasync) for index in range(1, count)
        ]
        self._shard_of: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self.stores)

    def close(self) -> None:
        """Close the shard environments (not the main one, which its owner closes)."""
        for store in self.stores[1:]:
            store.close()

    def reader_check(self) -> None:
        for store in self.stores:
            store.reader_check()

    # -- where a process lives ------------------------------------------------------------------
    def shard_of(self, pid: str) -> int | None:
        index = self._shard_of.get(pid)
        if index is None:
            for number, store in enumerate(self.stores):
                if store.process_record(pid) is not None:
                    with self._lock:
                        index = self._shard_of[pid] = number
                    break
        return index

    def of(self, pid: str) -> Store | None:
        index = self.shard_of(pid)
        return None if index is None else self.stores[index]

    def placed(self, pid: str, index: int) -> None:
        """``pid`` was just spawned on shard ``index``."""
        with self._lock:
            self._shard_of[pid] = index

    def process_ids(self) -> dict[str, int]:
        """Every process, with its shard."""
        found: dict[str, int] = {}
        for index, store in enumerate(self.stores):
            found.update(dict.fromkeys(store.process_ids(), index))
        with self._lock:
            self._shard_of.update(found)
        return found

    # -- the log side of persist's named operations, routed ---------------------------------------
    def process_record(self, pid: str) -> bytes | None:
        store = self.of(pid)
        return None if store is None else store.process_record(pid)

    def log_entry(self, pid: str, slot: int) -> bytes | None:
        store = self.of(pid)
        return None if store is None else store.log_entry(pid, slot)

    def last_slot(self, pid: str) -> int | None:
        store = self.of(pid)
        return None if store is None else store.last_slot("log", pid)

    def head(self, pid: str) -> tuple[int, bytes] | None:
        store = self.of(pid)
        return None if store is None else store.head(pid)

    def log_range(self, pid: str, first: int, last: int) -> list[tuple[int, bytes]]:
        store = self.of(pid)
        return [] if store is None else store.log_range(pid, first, last)

    def log_page(
        self, pid: str, first: int, last: int, limit: int, max_bytes: int
    ) -> tuple[list[tuple[int, bytes, bytes | None]], bool]:
        store = self.of(pid)
        return ([], False) if store is None else store.log_page(pid, first, last, limit, max_bytes)

    def entry_at(self, key: bytes) -> bytes | None:
        store = self.of(split_key(key)[0])
        return None if store is None else store.entry_at(key)

    def entry_with_item(self, key: bytes) -> tuple[bytes, bytes | None] | None:
        store = self.of(split_key(key)[0])
        return None if store is None else store.entry_with_item(key)

    def assignment_of(self, message_id: str, process: str | None = None) -> bytes | None:
        """The result key of ``message_id`` in ``process`` (its shard is asked), or where it was
        first assigned (every shard is asked)."""
        if process is not None:
            store = self.of(process)
            return None if store is None else store.assignment_of(message_id, process)
        for store in self.stores:
            key = store.assignment_of(message_id)
            if key is not None:
                return key
        return None

    def attestation_covering(self, pid: str, slot: int) -> bytes | None:
        store = self.of(pid)
        return None if store is None else store.attestation_covering(pid, slot)

    def signed_item(self, item_id: str) -> bytes | None:
        for store in self.stores:
            item = store.signed_item(item_id)
            if item is not None:
                return item
        return None
