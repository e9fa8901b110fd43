"""One LMDB environment holding everything durable, in named sub-databases.

    meta         node facts (identity, format version)
    modules      module id -> {"tags": [...]} and module id + "/wasm" -> the binary
    processes    process id -> module id
    messages     message id -> log key of its first assignment
    log          process id ‖ slot (8 bytes, big-endian) -> the message as its module reads it
    results      process id ‖ slot -> the result's response object
    checkpoints  process id ‖ slot -> a checkpoint of its memory (a full base, or a delta)
    undelivered  message id -> a message a process sent to a target this node does not have
    items        message, process or module id -> the signed ANS-104 data item it came in as

Keys of the log and of results sort by process, then slot, so one process's history is one range and
appends land in key order. Several OS processes open the environment at once: the SU writes fully
synced transactions; workers sync their data pages but not the meta page (LMDB's NOMETASYNC), so a
power loss can undo a worker's last commit, which is recomputed from the log, but cannot corrupt the
file. (Unsynced worker commits, NOSYNC, would risk corrupting acknowledged log entries too.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import lmdb

from actorao._exceptions import ActoraoError

log = logging.getLogger(__name__)

T = TypeVar("T")

SUBDATABASES = ("meta", "modules", "processes", "messages", "log", "results", "checkpoints", "undelivered", "items")
DEFAULT_MAP_SIZE = 1 << 30
_MAX_RETRIES = 64


def log_key(process: str, slot: int) -> bytes:
    return process.encode() + slot.to_bytes(8, "big")


def split_key(key: bytes) -> tuple[str, int]:
    return key[:-8].decode(), int.from_bytes(key[-8:], "big")


class _Gate:
    """Shared for transactions, exclusive for resizing the map, which LMDB allows only while this
    OS process has no transaction open."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if not self._active:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._resizing = True
            while self._active:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


class Store:
    """The node's LMDB environment. ``write`` and ``read`` retry transparently when the map must
    grow (here) or has grown (in another process), so ``MapFullError`` never reaches a caller."""

    def __init__(
        self, path: str | Path, *, sync: bool = True, metasync: bool = True, map_size: int = DEFAULT_MAP_SIZE
    ) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self.env = lmdb.open(
                str(self.path / "db"),
                map_size=map_size,
                max_dbs=len(SUBDATABASES),
                max_readers=1024,
                sync=sync,
                metasync=metasync,
                readahead=False,
            )
        except lmdb.Error as exc:
            raise ActoraoError(f"cannot open the store at {self.path}: {exc}") from exc
        self._gate = _Gate()
        self.db = {name: self.env.open_db(name.encode()) for name in SUBDATABASES}
        self.meta = self.db["meta"]
        self.modules = self.db["modules"]
        self.processes = self.db["processes"]
        self.messages = self.db["messages"]
        self.log = self.db["log"]
        self.results = self.db["results"]
        self.checkpoints = self.db["checkpoints"]
        self.items = self.db["items"]

    def close(self) -> None:
        self.env.close()

    # -- transactions ---------------------------------------------------------------------------
    def write(self, body: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``body`` in one write transaction and commit it (synced, unless opened sync=False).
        ``body`` may run again after a resize, so it must only write through the transaction."""
        for _ in range(_MAX_RETRIES):
            try:
                with self._gate.shared(), self.env.begin(write=True) as txn:
                    return body(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._adopt_new_size()
        raise ActoraoError(f"the store at {self.path} could not grow its map")

    def read(self, body: Callable[[lmdb.Transaction], T]) -> T:
        for _ in range(_MAX_RETRIES):
            try:
                with self._gate.shared(), self.env.begin() as txn:
                    return body(txn)
            except lmdb.MapResizedError:
                self._adopt_new_size()
        raise ActoraoError(f"the store at {self.path} keeps resizing")

    def reader_check(self) -> int:
        """Clear reader slots left by OS processes that died (a SIGKILLed worker); returns how many.
        A stale reader pins old pages, so the file would grow without bound."""
        with self._gate.shared():
            return int(self.env.reader_check())

    def _grow(self) -> None:
        with self._gate.exclusive():
            size = self.env.info()["map_size"] * 2
            log.info("growing the LMDB map of %s to %d MiB", self.path, size >> 20)
            self.env.set_mapsize(size)

    def _adopt_new_size(self) -> None:
        with self._gate.exclusive():
            self.env.set_mapsize(0)

    # -- reads used across rooms -----------------------------------------------------------------
    def get(self, db_name: str, key: bytes) -> bytes | None:
        db = self.db[db_name]

        def body(txn: lmdb.Transaction) -> bytes | None:
            value = txn.get(key, db=db)
            return None if value is None else bytes(value)

        return self.read(body)

    def last_slot(self, db_name: str, process: str) -> int | None:
        """The highest slot of ``process`` in the log or in results, or None."""
        db = self.db[db_name]
        upper = log_key(process, (1 << 64) - 1)
        prefix = process.encode()

        def body(txn: lmdb.Transaction) -> int | None:
            cursor = txn.cursor(db=db)
            if cursor.set_range(upper):
                if cursor.key() == upper:
                    return (1 << 64) - 1
                if not cursor.prev():
                    return None
            elif not cursor.last():
                return None
            key = bytes(cursor.key())
            if key[:-8] != prefix or len(key) != len(upper):
                return None
            return split_key(key)[1]

        return self.read(body)

    def log_range(self, process: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """Log entries of ``process`` with first <= slot <= last, in slot order."""
        return self.slot_range("log", process, first, last)

    def slot_range(self, db_name: str, process: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """(slot, value) of ``process`` in a database keyed by process ‖ slot (the log, results,
        checkpoints), with first <= slot <= last, in slot order."""
        start, stop = log_key(process, first), log_key(process, last)
        db = self.db[db_name]

        def body(txn: lmdb.Transaction) -> list[tuple[int, bytes]]:
            cursor = txn.cursor(db=db)
            out: list[tuple[int, bytes]] = []
            if not cursor.set_range(start):
                return out
            for key, value in cursor:
                if bytes(key) > stop:
                    break
                out.append((int.from_bytes(key[-8:], "big"), bytes(value)))
            return out

        return self.read(body)
