"""One LMDB environment holding everything durable, in named sub-databases.

    meta         node facts (identity, format version)
    modules      module id -> {"tags": [...]} and module id + "/wasm" -> the binary
    processes    process id -> module id
    messages     message id -> log key of its first assignment, and the number of the commit that made it
    entries      entry number (8 bytes, big-endian, from 0 in the order they were written) -> a message of
                 the log, as its module reads it
    slots        process number ‖ slot (8 bytes, big-endian) -> the number of its entry in ``entries``
    numbers      process id -> its process number (4 bytes, big-endian): given in this store in the order
                 of each process's first entry here (its spawn, or its hand-off to this shard)
    log          process id ‖ slot -> the message itself: the log as stores written before ``entries``
                 kept it, still read, never written
    results      process id ‖ slot -> the result's response object, as stores older than
                 ``numbered_results`` kept it: still read, never written
    checkpoints  process id ‖ slot -> a checkpoint of its memory (a full base, or a delta)
    undelivered  message id -> a message a process sent to a target this node does not have
    items        message, process or module id -> the signed ANS-104 data item it came in as
    commits      commit number (8 bytes, big-endian) -> the shard's signature over the heads of the hash
                 chains that commit moved: it covers every assignment the commit made
    attestations attestation id -> the same, as stores written before commit numbers kept it
    attested     process id ‖ slot -> the attestation whose head for that process is that slot (those
                 stores' index: a random insert per process and commit, which commit numbers avoid)
    handoffs     process id ‖ slot -> a signed hand-off: from that slot on, another shard schedules it
    tagged       kind (b"m" module, b"p" process) ‖ SHA-256(tag name ‖ 0 ‖ value)[:16] ‖ id -> nothing: the
                 gateway's index, so a tag or owner filter reads what matches, not every process
    data         data id -> {"owner", "tags", "size"}, and data id + "/bytes" -> the data: what WeaveDrive
                 serves, read in ranges straight from the map

Keys of results sort by process, then slot, so one process's history is one range and appends land
in key order; so do the keys of ``slots``, the log's index, by process number. The log's entries
themselves are appended in the order they were written. A commit over thousands of processes then
writes its entries on a few fresh pages, and touches only the index's small records (20 bytes, against
a 760-byte entry of a ``noop`` message), in their places. Processes spawned together sit together in
the index: a commit that reaches many of them touches few of its pages. Keyed by process id (43 random
bytes) and holding its entries, the log took a leaf page per process and commit: ``bench/log_layout.py``
measured 14.7 µs of the shard's CPU a message at 10,000 processes, round-robin, against 7.6 with the
entries appended and the index keyed by id, and 3.2 with this layout (in random order: 16.1, 7.2, 6.2).
Reading a range of one process's log pays a point lookup per entry for it. The entries of stores
written before (in ``log``) stay where they are and are read there: no store needs a migration.

Only this room spells a key: every other room asks by name ("the head of a process", "a page of its
log", "a module's wasm"), as HyperBEAM's scheduler cache does.

Several OS processes open the environment at once, and the SU writes fully synced transactions. Results
and checkpoints, which workers write and which can be computed again from the log, live in an
environment of their own that is never synced (``_computed.py``); ``results`` and ``checkpoints`` here
hold only what stores older than it kept, moved there when it first opens. There, results are keyed
by a process number of that environment's own (``result_numbers``) and slot, for the same reason as the
log's index: a worker's commit then touches a few pages of processes spawned together, not a page per
process.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import logging
import operator
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import orjson

from actorao._config import DEFAULT_MAP_SIZE, DEFAULT_MAX_MAP_SIZE
from actorao._exceptions import ActoraoError
from actorao.persist._computed import DATABASES as COMPUTED
from actorao.persist._computed import Computed
from actorao.persist._env import Environment, disk_full

log = logging.getLogger(__name__)

__all__ = ["MODULE", "OWNER", "PROCESS", "SUBDATABASES", "ModuleRecord", "Store", "disk_full", "log_key",
           "split_key"]

SUBDATABASES = ("meta", "modules", "processes", "messages", "log", "entries", "slots", "numbers", "results",
                "checkpoints", "undelivered", "items", "attestations", "attested", "handoffs", "commits", "tagged",
                "data")
_MIGRATE_BYTES = 64 << 20  # a transaction's worth of results and checkpoints moved from an older store
_MOVED = ("results", "checkpoints")  # what stores older than the computed environment kept in the main one


@dataclass(frozen=True, slots=True)
class ModuleRecord:
    """A module to store: its id, binary, meta ({"owner", "tags"} as JSON), compiled artifact (engine
    key suffix, machine code) for the workers, and the signed item it came in as."""

    id: str
    wasm: bytes
    meta: bytes
    compiled: tuple[bytes, bytes] | None = None
    signed: bytes | None = None


_KEY_LENGTH = 43 + 8  # a log key: a process id, then a slot


def _index_value(value: bytes | memoryview | None) -> tuple[bytes, int] | None:
    """A messages index value: a log key, then the number of the commit that made it (8 bytes) where
    the store keeps one."""
    if value is None:
        return None
    if len(value) == _KEY_LENGTH + 8:
        return bytes(value[:_KEY_LENGTH]), int.from_bytes(value[_KEY_LENGTH:], "big")
    return bytes(value), 0


MODULE, PROCESS = b"m", b"p"
OWNER = "\x00owner"  # the tag name the index files owners under; no tag can be named so


def _tag_key(kind: bytes, name: str, value: str) -> bytes:
    return kind + hashlib.sha256(name.encode() + b"\x00" + value.encode()).digest()[:16]


def log_key(process: str, slot: int) -> bytes:
    return process.encode() + slot.to_bytes(8, "big")


_first = operator.itemgetter(0)
_LAST_SLOT = (1 << 64) - 1


def split_key(key: bytes) -> tuple[str, int]:
    return key[:-8].decode(), int.from_bytes(key[-8:], "big")


class _Numbers:
    """The process numbers of one environment, kept in ``db``: process id -> 4 bytes, big-endian, given
    in the order of each process's first record there, so that processes spawned together sit together
    in what is keyed by number. Numbers never change once committed, and are never dropped: those read
    are kept here. One given in a write transaction waits in ``_given`` until a later transaction finds
    it committed, since the one that gave it may yet be aborted, or run again after the map grows."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._known: dict[bytes, bytes] = {}
        self._given: tuple[lmdb.Transaction | None, dict[bytes, bytes]] = (None, {})

    def of(self, txn: lmdb.Transaction, pid: bytes) -> bytes | None:
        """``pid``'s number, or None if it has none in this environment."""
        number = self._known.get(pid)
        if number is not None:
            return number
        given_in, given = self._given
        if given_in is txn and pid in given:
            return given[pid]
        found = txn.get(pid, db=self.db)
        if found is None:
            return None
        number = self._known[pid] = bytes(found)  # committed: not given in this transaction
        return number

    def to_write(self, txn: lmdb.Transaction, pid: bytes) -> bytes:
        """``pid``'s number, given now (in the write transaction ``txn``) if it has none."""
        number = self.of(txn, pid)
        if number is not None:
            return number
        given_in, given = self._given
        if given_in is not txn:
            given = {}
            self._given = (txn, given)
        number = given[pid] = int(txn.stat(self.db)["entries"]).to_bytes(4, "big")
        txn.put(pid, number, db=self.db)
        return number

    def keyed(self, txn: lmdb.Transaction, pairs: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """(process id ‖ slot, value) pairs keyed number ‖ slot instead, in key order (stable: of a key
        given twice, the later comes last), numbers given where none were."""
        to_write = self.to_write
        numbered: dict[bytes, bytes] = {}
        out = []
        for key, value in pairs:
            pid = key[:-8]
            number = numbered.get(pid)
            if number is None:
                number = numbered[pid] = to_write(txn, pid)
            out.append((number + key[-8:], value))
        out.sort(key=_first)
        return out


class Store(Environment):
    """The node's LMDB environment, and the facade of every key: results and checkpoints are read
    and written here too, in the environment of what is computed (``computed``)."""

    def __init__(
        self, path: str | Path, *, sync: bool = True, metasync: bool = True, map_size: int = DEFAULT_MAP_SIZE,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
    ) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        try:
            super().__init__(path, path / "db", SUBDATABASES, sync=sync, metasync=metasync, map_size=map_size,
                             max_map_size=max_map_size)
        except lmdb.Error as exc:
            raise ActoraoError(f"cannot open the store at {path}: {exc}") from exc
        self.meta = self.db["meta"]
        self.modules = self.db["modules"]
        self.processes = self.db["processes"]
        self.messages = self.db["messages"]
        self.log = self.db["log"]
        self.entries = self.db["entries"]
        self.slots = self.db["slots"]
        self.numbers = self.db["numbers"]
        self._numbers = _Numbers(self.numbers)  # the log's
        self._result_numbers: _Numbers | None = None  # the computed environment's, opened with it
        self.items = self.db["items"]
        self._map_size = map_size
        self._computed: Computed | None = None
        self._computed_lock = threading.Lock()

    def close(self) -> None:
        if self._computed is not None:
            self._computed.close()
        super().close()

    def reader_check(self) -> int:
        cleared = super().reader_check()
        return cleared + (self._computed.reader_check() if self._computed is not None else 0)

    # -- what is computed: results and checkpoints -----------------------------------------------
    @property
    def computed(self) -> Computed:
        """The environment of results and checkpoints, opened on first use (a shard never uses it).
        Write to it with ``computed.write`` (``put_results``, ``put_checkpoint``): never synced."""
        computed = self._computed
        return computed if computed is not None else self.open_computed()

    def open_computed(self) -> Computed:
        with self._computed_lock:
            if self._computed is None:
                computed = Computed(self.path, map_size=self._map_size, max_map_size=self.max_map_size,
                                    migrate=self._migrate_computed)
                self._result_numbers = _Numbers(computed.db["result_numbers"])
                self._computed = computed
            return self._computed

    @property
    def results(self) -> Any:
        return self.computed.results

    @property
    def checkpoints(self) -> Any:
        return self.computed.checkpoints

    @property
    def numbered_results(self) -> Any:
        return self.computed.db["numbered_results"]

    @property
    def result_numbers(self) -> _Numbers:
        numbers = self._result_numbers
        if numbers is None:
            self.open_computed()
            numbers = self._result_numbers
            assert numbers is not None
        return numbers

    def forget_computed(self) -> None:
        """Drop every result and checkpoint: the workers compute them again from the log."""
        self.computed.forget()

    def _migrate_computed(self, computed: Computed) -> None:
        """Move the results and checkpoints a store older than ``computed`` kept here into it, a
        transaction at a time; synced there before they are dropped here."""
        moved = 0
        for name in _MOVED:
            old, new = self.db[name], computed.db[name]
            after: bytes | None = None
            while batch := self.read(functools.partial(_batch_after, db=old, after=after)):
                computed.write(functools.partial(_put_all, db=new, pairs=batch))
                moved += len(batch)
                after = batch[-1][0]
        if moved:
            computed.env.sync(True)
            self.clear(_MOVED)
            log.info("moved %d results and checkpoints of %s into %s", moved, self.path, computed.folder)

    # -- reads used across rooms -----------------------------------------------------------------
    def _holding(self, db_name: str) -> Environment:
        """The environment that holds ``db_name``: results and checkpoints are the computed one's."""
        return self.computed if db_name in COMPUTED else self

    def get(self, db_name: str, key: bytes) -> bytes | None:
        return Environment.get(self._holding(db_name), db_name, key)

    def last_slot(self, db_name: str, process: str) -> int | None:
        """The highest slot of ``process`` in the log, in results, or in checkpoints, or None."""
        if db_name == "log":
            return self.read(lambda txn: self._last_logged(txn, process))
        if db_name == "results":
            return self.computed.read(lambda txn: self._last_result(txn, process))
        env = self._holding(db_name)
        db = env.db[db_name]

        def body(txn: lmdb.Transaction) -> int | None:
            found = _last(txn, db, process.encode())
            return None if found is None else found[0]

        return env.read(body)

    def log_range(self, process: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """Log entries of ``process`` with first <= slot <= last, in slot order."""
        return self.read(lambda txn: list(self._logged(txn, process, first, last)))

    def slot_range(self, db_name: str, process: str, first: int, last: int) -> list[tuple[int, bytes]]:
        """(slot, value) of ``process`` in a database keyed by process ‖ slot (the log, results,
        checkpoints), with first <= slot <= last, in slot order."""
        if db_name == "log":
            return self.log_range(process, first, last)
        if db_name == "results":
            return self.computed.read(lambda txn: list(self._results(txn, process, first, last, ascending=True)))
        env = self._holding(db_name)
        db = env.db[db_name]
        return env.read(lambda txn: list(_ascending(txn, db, process.encode(), first, last)))

    # -- the log's layout: entries by number, an index by process number and slot ---------------
    def _entry_at(self, txn: lmdb.Transaction, key: bytes) -> bytes | None:
        """The entry at a result key (process ‖ slot), or None."""
        number = self._numbers.of(txn, key[:-8])
        if number is not None:
            at = txn.get(number + key[-8:], db=self.slots)
            if at is not None:
                return _entry(txn, self.entries, at)
        found = txn.get(key, db=self.log)  # written before numbers: in the log itself
        return None if found is None else bytes(found)

    def _logged(self, txn: lmdb.Transaction, pid: str, first: int, last: int) -> Iterator[tuple[int, bytes]]:
        """(slot, entry) of ``pid`` with first <= slot <= last, ascending, lazily: those a store written
        before numbers kept (always the lower slots), then the rest."""
        yield from _ascending(txn, self.log, pid.encode(), first, last)
        number = self._numbers.of(txn, pid.encode())
        if number is not None:
            entries = self.entries
            for slot, at in _ascending(txn, self.slots, number, first, last):
                yield slot, _entry(txn, entries, at)

    def _newest(self, txn: lmdb.Transaction, pid: str) -> tuple[int, bytes, bool] | None:
        """(slot, value, whether the value is an entry's number) of ``pid``'s newest entry: in the index,
        or in the log as stores before numbers kept it (the entry itself); None if its log is empty."""
        number = self._numbers.of(txn, pid.encode())
        found = None if number is None else _last(txn, self.slots, number)
        if found is not None:
            return found[0], found[1], True
        found = _last(txn, self.log, pid.encode())
        return None if found is None else (found[0], found[1], False)

    def _last_logged(self, txn: lmdb.Transaction, pid: str) -> int | None:
        """The highest slot in ``pid``'s log, or None."""
        found = self._newest(txn, pid)
        return None if found is None else found[0]

    def _results(self, txn: lmdb.Transaction, pid: str, first: int, last: int, *, ascending: bool
                 ) -> Iterator[tuple[int, bytes]]:
        """(slot, result) of ``pid`` with first <= slot <= last, in either order, lazily: those kept
        by number, and those a store older than numbers kept by process id."""
        walk = _ascending if ascending else _descending
        older = walk(txn, self.results, pid.encode(), first, last)
        number = self.result_numbers.of(txn, pid.encode())
        if number is None:
            return older
        return heapq.merge(older, walk(txn, self.numbered_results, number, first, last), key=_first,
                           reverse=not ascending)

    def _last_result(self, txn: lmdb.Transaction, pid: str) -> int | None:
        number = self.result_numbers.of(txn, pid.encode())
        found = [] if number is None else [_last(txn, self.numbered_results, number)]
        slots = [entry[0] for entry in (*found, _last(txn, self.results, pid.encode())) if entry is not None]
        return max(slots, default=None)

    # -- named operations: the only code that knows the key layout ------------------------------
    # Processes and the log
    def process_ids(self) -> list[str]:
        db = self.processes
        return self.read(lambda txn: [bytes(key).decode() for key, _ in txn.cursor(db=db)])

    def process_record(self, pid: str, txn: lmdb.Transaction | None = None) -> bytes | None:
        """What was fixed for ``pid`` at spawn (its module and limits), or None if there is no such process."""
        if txn is not None:
            value = txn.get(pid.encode(), db=self.processes)
            return None if value is None else bytes(value)
        return self.get("processes", pid.encode())

    def put_process(self, txn: lmdb.Transaction, pid: str, record: bytes) -> None:
        txn.put(pid.encode(), record, db=self.processes)

    def log_entry(self, pid: str, slot: int) -> bytes | None:
        """The message at ``slot`` of ``pid``'s log, as its module reads it."""
        return self.entry_at(log_key(pid, slot))

    def entry_at(self, key: bytes) -> bytes | None:
        """The log entry at a result key (process ‖ slot), as the workers and waiters name them."""
        return self.read(functools.partial(self._entry_at, key=key))

    def entry_in(self, txn: lmdb.Transaction, key: bytes) -> bytes:
        """The log entry at a result key that an index or a result says exists."""
        raw = self._entry_at(txn, key)
        assert raw is not None, "indexes and results point into the log"
        return raw

    def _next_entry(self, txn: lmdb.Transaction) -> int:
        """The number the next entry written gets: one past the last (a store has one writer at a time)."""
        cursor = txn.cursor(db=self.entries)
        return int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 0

    def head(self, pid: str, txn: lmdb.Transaction | None = None) -> tuple[int, bytes] | None:
        """The slot and entry of ``pid``'s latest assignment, or None if its log is empty."""

        def body(txn: lmdb.Transaction) -> tuple[int, bytes] | None:
            found = self._newest(txn, pid)
            if found is None:
                return None
            slot, value, numbered = found
            return slot, _entry(txn, self.entries, value) if numbered else value

        return body(txn) if txn is not None else self.read(body)

    def put_assignment(
        self, txn: lmdb.Transaction, pid: str, slot: int, entry: bytes, once: str, signed: tuple[str, bytes] | None,
        commit: int = 0,
    ) -> bytes:
        """Append ``entry`` at ``slot`` of ``pid``'s log, index it under ``once`` (see ``assignment_of``)
        with the number of the ``commit`` that makes it, and keep the signed item (id, bytes) it came in
        as; returns its result key."""
        key = log_key(pid, slot)
        at = self._next_entry(txn).to_bytes(8, "big")
        txn.put(at, entry, db=self.entries, append=True)
        txn.put(self._numbers.to_write(txn, key[:-8]) + key[-8:], at, db=self.slots)
        txn.put(once.encode(), key + commit.to_bytes(8, "big") if commit else key, db=self.messages)
        if signed is not None:
            txn.put(signed[0].encode(), signed[1], db=self.items, overwrite=False)
        return key

    def put_fresh_assignments(
        self, txn: lmdb.Transaction, entries: list[tuple[bytes, bytes]], ids: list[bytes], commit: int
    ) -> None:
        """``put_assignment`` of many messages whose ids were minted just now (so each is indexed under
        its id, given as its text's bytes, and none came signed): (result key, entry) each, in one call
        per database."""
        suffix = commit.to_bytes(8, "big") if commit else b""
        index = [(message_id, key + suffix) for message_id, (key, _) in zip(ids, entries, strict=True)]
        first = self._next_entry(txn)
        at = [number.to_bytes(8, "big") for number in range(first, first + len(entries))]
        written = txn.cursor(db=self.entries).putmulti(
            zip(at, map(operator.itemgetter(1), entries), strict=True), append=True)[1]
        # In key order, a process's entries of the commit follow one another, and LMDB's cursor finds most
        # on the leaf page it is on, without a search from the root (a quarter of the puts' time here).
        slots = self._numbers.keyed(txn, [(key, place) for (key, _), place in zip(entries, at, strict=True)])
        written += txn.cursor(db=self.slots).putmulti(slots)[1]
        written += txn.cursor(db=self.messages).putmulti(index)[1]
        if written != 3 * len(entries):
            raise ActoraoError(f"the store kept {written} of {3 * len(entries)} records of a commit")

    @staticmethod
    def once_key(message_id: str, assignee: str | None) -> str:
        """The name under which a message is assigned once: its id where it was sent, and id|process
        for each further process it was assigned to."""
        return message_id if assignee is None else f"{message_id}|{assignee}"

    def assignment_of(
        self, message_id: str, process: str | None = None, txn: lmdb.Transaction | None = None
    ) -> bytes | None:
        """The result key of ``message_id``: where it was first assigned, or in ``process`` (where it was
        sent, or assigned to later); None if it was not."""

        def body(txn: lmdb.Transaction) -> bytes | None:
            found = self._indexed(txn, message_id, process)
            return None if found is None else found[0]

        return body(txn) if txn is not None else self.read(body)

    def _indexed(self, txn: lmdb.Transaction, message_id: str, process: str | None) -> tuple[bytes, int] | None:
        """(log key, commit number: 0 where the store kept none) of ``message_id``'s assignment, as
        ``assignment_of`` finds it."""
        found = _index_value(txn.get(message_id.encode(), db=self.messages))
        if found is not None and process is not None and found[0][:-8] != process.encode():
            found = _index_value(txn.get(self.once_key(message_id, process).encode(), db=self.messages))
        return found

    def log_page(
        self, pid: str, first: int, last: int, limit: int, max_bytes: int
    ) -> tuple[list[tuple[int, bytes, bytes | None]], bool]:
        """(slot, entry, signed item or None) of ``pid`` with first <= slot <= last, at most ``limit`` of
        them and about ``max_bytes``; and whether more follow."""

        def body(txn: lmdb.Transaction) -> tuple[list[tuple[int, bytes, bytes | None]], bool]:
            out: list[tuple[int, bytes, bytes | None]] = []
            size = 0
            for slot, raw in self._logged(txn, pid, first, last):
                if len(out) == limit or (out and size + len(raw) > max_bytes):
                    return out, True
                size += len(raw)
                out.append((slot, raw, self._item(txn, orjson.loads(raw)["Id"])))
            return out, False

        return self.read(body)

    def entry_with_item(self, key: bytes) -> tuple[bytes, bytes | None] | None:
        """The log entry at a result key, and the signed item its message came in as (None if unsigned)."""

        def body(txn: lmdb.Transaction) -> tuple[bytes, bytes | None] | None:
            raw = self._entry_at(txn, key)
            if raw is None:
                return None
            return raw, self._item(txn, orjson.loads(raw)["Id"])

        return self.read(body)

    # Signed items
    def signed_item(self, item_id: str) -> bytes | None:
        """The ANS-104 data item ``item_id`` came in as, if it came in signed."""
        return self.get("items", item_id.encode())

    def _item(self, txn: lmdb.Transaction, item_id: str) -> bytes | None:
        raw = txn.get(item_id.encode(), db=self.items)
        return None if raw is None else bytes(raw)

    # Results
    def results_at(self, keys: list[bytes]) -> list[tuple[bytes, bytes]]:
        """(key, result) for each result key that has a stored result."""

        # Once: a waiter for a whole stream asks for tens of thousands.
        older, numbered, number_of = self.results, self.numbered_results, self.result_numbers.of

        def body(txn: lmdb.Transaction) -> list[tuple[bytes, bytes]]:
            get = txn.get
            any_older = txn.stat(older)["entries"] > 0
            out = []
            for key in keys:
                number = number_of(txn, key[:-8])
                value = None if number is None else get(number + key[-8:], db=numbered)
                if value is None and any_older:
                    value = get(key, db=older)
                if value is not None:
                    out.append((key, bytes(value)))
            return out

        return self.computed.read(body)

    def put_results(self, txn: lmdb.Transaction, results: list[tuple[bytes, bytes]]) -> None:
        """In key order, through one cursor: processes spawned together have numbers together, so a
        commit's results over many of them land on a few pages, and in order each one finds its place
        from the last one's leaf (a key given twice: the later wins, as put by put, since the sort is
        stable). A result an older store kept for the same slot is dropped: it is replaced."""
        with txn.cursor(db=self.numbered_results) as cursor:
            cursor.putmulti(self.result_numbers.keyed(txn, results))
        older = self.results
        if txn.stat(older)["entries"]:
            for key, _ in results:
                txn.delete(key, db=older)

    def forget_results_before(self, txn: lmdb.Transaction, pid: str, slot: int) -> None:
        """Drop the results of ``pid`` below ``slot``."""
        _delete_below(txn, self.results, pid.encode(), slot)
        number = self.result_numbers.of(txn, pid.encode())
        if number is not None:
            _delete_below(txn, self.numbered_results, number, slot)

    def result_page(
        self, pid: str, first: int, last: int, limit: int, ascending: bool, max_bytes: int,
        keep: Callable[[int, bytes], bool] | None = None,
    ) -> list[tuple[int, bytes]]:
        """(slot, result) of ``pid`` with first <= slot <= last, in either order, at most ``limit`` and
        about ``max_bytes``; ``keep`` (given the slot and the result) filters them."""

        def body(txn: lmdb.Transaction) -> list[tuple[int, bytes]]:
            found = self._results(txn, pid, first, last, ascending=ascending)
            out: list[tuple[int, bytes]] = []
            size = 0
            for slot, raw in found:
                if keep is not None and not keep(slot, raw):
                    continue
                size += len(raw)
                if out and size > max_bytes:
                    break
                out.append((slot, raw))
                if len(out) == limit:
                    break
            return out

        return self.computed.read(body)

    # The gateway's index
    def put_tagged(self, txn: lmdb.Transaction, kind: bytes, tx_id: str, owner: str,
                   tags: Iterable[tuple[str, str]]) -> None:
        """Index a module or process (``kind``) by each of its tags and by its owner."""
        db = self.db["tagged"]
        for name, value in {*tags, (OWNER, owner)}:
            txn.put(_tag_key(kind, name, value) + tx_id.encode(), b"", db=db)

    def tagged(self, kind: bytes, name: str, value: str, limit: int) -> list[str]:
        """Ids of the ``kind`` indexed with tag ``name`` = ``value`` (``OWNER``: by owner), at most ``limit``."""
        db, prefix = self.db["tagged"], _tag_key(kind, name, value)

        def body(txn: lmdb.Transaction) -> list[str]:
            cursor = txn.cursor(db=db)
            found: list[str] = []
            if cursor.set_range(prefix):
                for key in cursor.iternext(values=False):
                    if not bytes(key).startswith(prefix) or len(found) >= limit:
                        break
                    found.append(bytes(key[len(prefix):]).decode())
            return found

        return self.read(body)

    def index_existing(self) -> None:
        """Fill the index from the processes spawned (their slot 0 in this log) and the modules
        stored before it existed; once per store."""
        def body(txn: lmdb.Transaction) -> None:
            if txn.get(b"tagged-index", db=self.meta) is not None:
                return
            for key, meta in list(txn.cursor(db=self.modules)):
                if len(key) == _ID_BYTES:
                    doc = orjson.loads(meta)
                    self.put_tagged(txn, MODULE, bytes(key).decode(), doc.get("owner", ""),
                                    [(tag["name"], tag["value"]) for tag in doc.get("tags", ())])
            for key in list(txn.cursor(db=self.processes).iternext(values=False)):
                spawn = self._entry_at(txn, bytes(key) + (0).to_bytes(8, "big"))
                if spawn is not None:
                    doc = orjson.loads(spawn)
                    self.put_tagged(txn, PROCESS, bytes(key).decode(), doc.get("Owner", ""),
                                    [(tag["name"], tag["value"]) for tag in doc.get("Tags", ())])
            txn.put(b"tagged-index", b"1", db=self.meta)

        self.write(body)

    # Modules
    def module_ids(self) -> list[str]:
        db = self.modules
        # A module's meta sits under its bare id; its wasm and compiled artifacts under id + suffix.
        return self.read(lambda txn: [bytes(key).decode() for key, _ in txn.cursor(db=db) if len(key) == _ID_BYTES])

    def module_meta(self, module_id: str, txn: lmdb.Transaction | None = None) -> bytes | None:
        if txn is not None:
            value = txn.get(module_id.encode(), db=self.modules)
            return None if value is None else bytes(value)
        return self.get("modules", module_id.encode())

    def module_wasm(self, module_id: str) -> bytes | None:
        return self.get("modules", module_id.encode() + _WASM)

    def module_size(self, module_id: str) -> int:
        wasm = self.module_wasm(module_id)
        return 0 if wasm is None else len(wasm)

    def module_artifact(self, module_id: str, suffix: bytes) -> bytes | None:
        """Machine code compiled from the module by the engine that ``suffix`` names."""
        return self.get("modules", module_id.encode() + suffix)

    def put_module(self, txn: lmdb.Transaction, module: ModuleRecord) -> None:
        """Store a module once (a second put of the same id keeps the first), with its compiled
        artifact and the signed item it came in as."""
        key = module.id.encode()
        if txn.get(key, db=self.modules) is None:
            meta = orjson.loads(module.meta)
            self.put_tagged(txn, MODULE, module.id, meta.get("owner", ""),
                            [(tag["name"], tag["value"]) for tag in meta.get("tags", ())])
            txn.put(key, module.meta, db=self.modules)
            txn.put(key + _WASM, module.wasm, db=self.modules)
            if module.signed is not None:
                txn.put(key, module.signed, db=self.items)
        if module.compiled is not None:
            self.put_artifact(txn, module.id, *module.compiled)

    def put_artifact(self, txn: lmdb.Transaction, module_id: str, suffix: bytes, artifact: bytes) -> None:
        txn.put(module_id.encode() + suffix, artifact, db=self.modules, overwrite=False)

    # Data (WeaveDrive's files)
    def put_data(self, txn: lmdb.Transaction, data_id: str, data: bytes, meta: bytes) -> bool:
        """Store data once under its id; False if that id was stored already (the first is kept)."""
        key = data_id.encode()
        if txn.get(key, db=self.db["data"]) is not None:
            return False
        txn.put(key + _BYTES, data, db=self.db["data"])
        txn.put(key, meta, db=self.db["data"])
        return True

    def data_meta(self, data_id: str) -> bytes | None:
        return self.get("data", data_id.encode())

    def data_range(self, data_id: str, offset: int, length: int) -> bytes | None:
        """``length`` bytes of the data from ``offset`` (fewer at its end), or None if it is not stored.
        Only the range is copied out of the map."""
        key = data_id.encode() + _BYTES
        db = self.db["data"]

        def body(txn: lmdb.Transaction) -> bytes | None:
            value = txn.get(key, db=db)
            return None if value is None else bytes(value[offset:offset + length])

        return self.read(body, buffers=True)

    # Checkpoints
    def checkpoint_chain(self, pid: str, is_base: Callable[[bytes], bool]) -> list[bytes]:
        """The blobs of ``pid``'s newest checkpoint chain, oldest (the one ``is_base`` accepts) first."""
        prefix = pid.encode()

        def body(txn: lmdb.Transaction) -> list[bytes]:
            cursor = txn.cursor(db=self.checkpoints)
            found = cursor.prev() if cursor.set_range(log_key(pid, _LAST_SLOT)) else cursor.last()
            chain: list[bytes] = []
            while found and bytes(cursor.key())[:-8] == prefix:
                blob = bytes(cursor.value())
                chain.append(blob)
                if is_base(blob):
                    break
                found = cursor.prev()
            return chain[::-1]

        return self.computed.read(body)

    def checkpoint_sizes(self, pid: str, is_base: Callable[[Any], bool]) -> list[tuple[int, int]]:
        """The slot and size of each checkpoint in ``pid``'s newest chain, oldest (its base) first,
        without copying one: a state read streams them with ``checkpoint_part``."""
        prefix = pid.encode()

        def body(txn: lmdb.Transaction) -> list[tuple[int, int]]:
            cursor = txn.cursor(db=self.checkpoints)
            found = cursor.prev() if cursor.set_range(log_key(pid, _LAST_SLOT)) else cursor.last()
            chain: list[tuple[int, int]] = []
            while found and bytes(cursor.key())[:-8] == prefix:
                value = cursor.value()
                chain.append((split_key(bytes(cursor.key()))[1], len(value)))
                if is_base(value):
                    break
                found = cursor.prev()
            return chain[::-1]

        return self.computed.read(body, buffers=True)

    def checkpoint_part(self, pid: str, slot: int, start: int, length: int, head: int) -> tuple[bytes, bytes] | None:
        """The first ``head`` bytes of ``pid``'s checkpoint at ``slot`` and ``length`` bytes of it from
        ``start``, copied out of one short read; None if it is no longer stored. A checkpoint is read
        in parts, so a long read never holds a transaction (which would stop the map from growing)."""
        key = log_key(pid, slot)

        def body(txn: lmdb.Transaction) -> tuple[bytes, bytes] | None:
            value = txn.get(key, db=self.checkpoints)
            return None if value is None else (bytes(value[:head]), bytes(value[start:start + length]))

        return self.computed.read(body, buffers=True)

    def put_checkpoint(self, txn: lmdb.Transaction, pid: str, slot: int, blob: bytes, *, prune_before: bool) -> None:
        """Store a checkpoint of ``pid`` at ``slot``; ``prune_before`` drops every older one (a new base)."""
        db = self.checkpoints
        txn.put(log_key(pid, slot), blob, db=db)
        if prune_before:
            _delete_below(txn, db, pid.encode(), slot)

    def forget_checkpoints(self, txn: lmdb.Transaction, pid: str) -> None:
        """Drop every stored checkpoint of ``pid`` (no slot reaches the largest 8-byte one)."""
        _delete_below(txn, self.checkpoints, pid.encode(), _LAST_SLOT)

    # Node facts and undelivered messages
    def identity(self, mint: Callable[[], str]) -> str:
        """The node's identity, minted by ``mint`` on the first open."""

        def body(txn: lmdb.Transaction) -> str:
            existing = txn.get(b"identity", db=self.meta)
            if existing is not None:
                return bytes(existing).decode()
            identity = mint()
            txn.put(b"identity", identity.encode(), db=self.meta)
            return identity

        return self.write(body)

    def meta_value(self, name: str, mint: Callable[[], bytes] | None = None) -> bytes | None:
        """A fact kept in ``meta`` (a shard's key); with ``mint``, made and kept on first use."""
        key = name.encode()

        def body(txn: lmdb.Transaction) -> bytes | None:
            existing = txn.get(key, db=self.meta)
            if existing is not None or mint is None:
                return None if existing is None else bytes(existing)
            value = mint()
            txn.put(key, value, db=self.meta)
            return value

        return self.write(body) if mint is not None else self.read(body)

    # Attestations of the log
    def last_commit(self) -> int:
        """The number of the newest commit that kept an attestation (0: none yet)."""

        def body(txn: lmdb.Transaction) -> int:
            cursor = txn.cursor(db=self.db["commits"])
            return int.from_bytes(cursor.key(), "big") if cursor.last() else 0

        return self.read(body)

    def put_attestation(self, txn: lmdb.Transaction, commit: int, record: bytes) -> None:
        """Keep the signed attestation of commit number ``commit``: it covers every assignment the
        commit made, each of which the messages index names with that number."""
        txn.put(commit.to_bytes(8, "big"), record, db=self.db["commits"])

    def attestation_covering(self, pid: str, slot: int) -> bytes | None:
        """An attestation whose head for ``pid`` is at ``slot`` or after it (it covers ``slot``
        through the hash chain): that of the commit that assigned the slot; None if none does yet."""
        attested, attestations = self.db["attested"], self.db["attestations"]

        def body(txn: lmdb.Transaction) -> bytes | None:
            entry = self._entry_at(txn, log_key(pid, slot))
            found = self._indexed(txn, orjson.loads(entry)["Id"], pid) if entry is not None else None
            if found is not None and found[0] == log_key(pid, slot) and found[1]:
                record = txn.get(found[1].to_bytes(8, "big"), db=self.db["commits"])
                if record is not None:
                    return bytes(record)
            # Written before commit numbers: the first attestation indexed at or after the slot.
            cursor = txn.cursor(db=attested)
            if not cursor.set_range(log_key(pid, slot)) or bytes(cursor.key())[:-8] != pid.encode():
                return None
            record = txn.get(bytes(cursor.value()), db=attestations)
            return None if record is None else bytes(record)

        return self.read(body)

    # Hand-offs of a process between shards
    def put_handoff(self, txn: lmdb.Transaction, pid: str, slot: int, record: bytes) -> None:
        txn.put(log_key(pid, slot), record, db=self.db["handoffs"])

    def handoffs(self, pid: str, txn: lmdb.Transaction | None = None) -> list[tuple[int, bytes]]:
        """(first slot at the new shard, record) of every hand-off of ``pid`` this store holds, in order."""
        db = self.db["handoffs"]

        def body(txn: lmdb.Transaction) -> list[tuple[int, bytes]]:
            return list(_ascending(txn, db, pid.encode(), 0, _LAST_SLOT))

        return body(txn) if txn is not None else self.read(body)

    def put_undelivered(self, records: list[tuple[str, bytes]]) -> None:
        """Keep (message id, record) of messages that could not be delivered, all in one transaction."""
        db = self.db["undelivered"]
        self.write(lambda txn: [txn.put(message_id.encode(), record, db=db) for message_id, record in records])

    def undelivered(self) -> list[bytes]:
        db = self.db["undelivered"]
        return self.read(lambda txn: [bytes(value) for _, value in txn.cursor(db=db)])

    def checkpoints_of(self, pid: str) -> list[tuple[int, int]]:
        """The slot and size of each stored checkpoint of ``pid``, oldest first."""
        db, prefix = self.checkpoints, pid.encode()

        def body(txn: lmdb.Transaction) -> list[tuple[int, int]]:
            cursor = txn.cursor(db=db)
            found: list[tuple[int, int]] = []
            if cursor.set_range(log_key(pid, 0)):
                for key, value in cursor:
                    if bytes(key)[:-8] != prefix:
                        break
                    found.append((split_key(bytes(key))[1], len(value)))
            return found

        return self.computed.read(body)

    def checkpoint_count(self) -> int:
        """How many checkpoints are stored, every process's: a count LMDB keeps, so it costs nothing."""
        db = self.checkpoints
        return int(self.computed.read(lambda txn: txn.stat(db)["entries"]))

    def checkpoint_bytes(self) -> int:
        """The size of every stored checkpoint, for the bench's report."""
        db = self.checkpoints
        return int(self.computed.read(lambda txn: sum(len(value) for _, value in txn.cursor(db=db))))


_ID_BYTES = 43  # a base64url SHA-256
_WASM = b"/wasm"
_BYTES = b"/bytes"


def _entry(txn: lmdb.Transaction, entries: Any, at: bytes | memoryview) -> bytes:
    """The entry numbered ``at``, which the index says exists."""
    found = txn.get(bytes(at), db=entries)
    assert found is not None, "the log's index names entries that exist"
    return bytes(found)


def _slots_between(first: int, last: int) -> tuple[int, int] | None:
    """first..last clipped to the slots a key can spell (0 to 2^64-1); None when that is empty. A
    range may well be empty: rolling back slot 0 replays slots 0..-1."""
    first, last = max(first, 0), min(last, _LAST_SLOT)
    return (first, last) if first <= last else None


def _batch_after(txn: lmdb.Transaction, db: Any, after: bytes | None) -> list[tuple[bytes, bytes]]:
    """The (key, value) pairs of ``db`` after key ``after`` (from the first if None), about
    _MIGRATE_BYTES of them."""
    cursor = txn.cursor(db=db)
    found = cursor.set_range(after) if after is not None else cursor.first()
    if found and after is not None and bytes(cursor.key()) == after:
        found = cursor.next()
    batch: list[tuple[bytes, bytes]] = []
    size = 0
    while found and size < _MIGRATE_BYTES:
        batch.append((bytes(cursor.key()), bytes(cursor.value())))
        size += len(batch[-1][1])
        found = cursor.next()
    return batch


def _put_all(txn: lmdb.Transaction, db: Any, pairs: list[tuple[bytes, bytes]]) -> None:
    for key, value in pairs:
        txn.put(key, value, db=db)


def _delete_below(txn: lmdb.Transaction, db: Any, prefix: bytes, slot: int) -> None:
    """Delete the records of ``db`` keyed ``prefix`` (a process id or number) ‖ slot below ``slot``."""
    cursor = txn.cursor(db=db)
    stop = prefix + slot.to_bytes(8, "big")
    if cursor.set_range(prefix + bytes(8)):
        while bytes(cursor.key()) < stop and cursor.delete():
            pass


def _last(txn: lmdb.Transaction, db: Any, prefix: bytes) -> tuple[int, bytes] | None:
    """(slot, value) of the highest slot keyed ``prefix`` (a process id or number) ‖ slot, or None."""
    cursor = txn.cursor(db=db)
    upper = prefix + _LAST_SLOT.to_bytes(8, "big")
    if cursor.set_range(upper):
        if cursor.key() != upper and not cursor.prev():
            return None
    elif not cursor.last():
        return None
    key = bytes(cursor.key())
    if len(key) != len(upper) or key[:-8] != prefix:
        return None
    return int.from_bytes(key[-8:], "big"), bytes(cursor.value())


def _ascending(txn: lmdb.Transaction, db: Any, prefix: bytes, first: int, last: int) -> Iterator[tuple[int, bytes]]:
    """(slot, value) keyed ``prefix`` (a process id or number) ‖ slot with first <= slot <= last,
    ascending, lazily."""
    if (span := _slots_between(first, last)) is None:
        return
    first, last = span
    cursor = txn.cursor(db=db)
    stop = prefix + last.to_bytes(8, "big")
    if not cursor.set_range(prefix + first.to_bytes(8, "big")):
        return
    for key, value in cursor:
        if bytes(key) > stop:
            return
        yield int.from_bytes(key[-8:], "big"), bytes(value)


def _descending(txn: lmdb.Transaction, db: Any, prefix: bytes, first: int, last: int) -> Iterator[tuple[int, bytes]]:
    if (span := _slots_between(first, last)) is None:
        return
    first, last = span
    cursor = txn.cursor(db=db)
    start, stop = prefix + first.to_bytes(8, "big"), prefix + last.to_bytes(8, "big")
    found = cursor.set_range(stop)
    if found and bytes(cursor.key()) > stop:
        found = cursor.prev()
    elif not found:
        found = cursor.last()
    while found:
        key = bytes(cursor.key())
        if key < start:
            return
        yield int.from_bytes(key[-8:], "big"), bytes(cursor.value())
        found = cursor.prev()
