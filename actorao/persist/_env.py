"""One LMDB environment with named sub-databases, whose transactions carry on across map growth: the
node's store (``_store.py``) and the environment of what workers compute (``_computed.py``) are both
one of these.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import lmdb

from actorao._exceptions import ActoraoError, StoreFull

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_RETRIES = 64
AHEAD = 2 << 20  # how far past its pages in use a synced environment keeps its file written (``allocate_ahead``)
_ZEROS = memoryview(bytes(AHEAD))  # calloc'd: no memory is touched until it is written out
_DISK_ERRORS = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG))


def disk_full(exc: lmdb.Error) -> bool:
    """Whether an LMDB error says the disk took no more: py-lmdb raises DiskError for ENOSPC, and a
    plain Error carrying the OS's message (``mdb_txn_commit: Input/output error``) for the rest."""
    return isinstance(exc, lmdb.DiskError) or any(text in str(exc) for text in _DISK_ERRORS)


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


class Environment:
    """An LMDB environment in ``folder`` with the sub-databases ``databases`` (``self.db``). ``write``
    and ``read`` retry transparently when the map must grow (here) or has grown (in another process),
    so ``MapFullError`` never reaches a caller. ``path`` names it in errors."""

    def __init__(
        self, path: Path, folder: Path, databases: tuple[str, ...], *, sync: bool, metasync: bool, map_size: int,
        max_map_size: int,
    ) -> None:
        self.path = path
        self.max_map_size = max(max_map_size, map_size)
        self.env = lmdb.open(
            str(folder),
            map_size=map_size,
            max_dbs=len(databases),
            max_readers=1024,
            sync=sync,
            metasync=metasync,
            readahead=False,
        )
        self._gate = _Gate()
        try:
            self.db = {name: self.env.open_db(name.encode()) for name in databases}
        except lmdb.Error:
            self.env.close()
            raise
        self._data_file = folder / "data.mdb"
        self._page = int(self.env.stat()["psize"])
        self._allocated: int | None = None  # where the file written ahead ends; None: not kept (``allocate_ahead``)
        if sync:
            self._allocated = self._data_file.stat().st_size

    def close(self) -> None:
        self.env.close()

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
            except lmdb.Error as exc:
                if disk_full(exc):
                    raise StoreFull(f"the disk under the store at {self.path} is full or failing ({exc}); "
                                    "nothing of this write was kept: free space and send it again") from exc
                raise
        raise ActoraoError(f"the store at {self.path} could not grow its map")

    def allocate_ahead(self) -> None:
        """Keep the data file of a synced environment written out past the pages in use (``AHEAD``), so
        that the next commits do not make it longer. A commit that makes it longer has its fdatasync
        commit the file system's journal too (the new length, the new blocks), and wait for it. In a
        serial round trip on aos (``bench/round_trip.py --hops``, 3 paired runs, 2-core VM, ext4) the
        commit's sync took 0.64-0.68 ms at p50 and 0.76-2.07 at p75 with the file written ahead,
        against 0.73-0.85 and 2.13-2.30 without, and the trip 2.90-2.94 ms at p50 against 3.01-3.12:
        when the sync ends after the evaluation, the result waits for it. The file is extended with
        zeros, past its end only, and synced, here: LMDB later overwrites them in place, which needs no
        journal (fallocate's unwritten blocks would: their first write is journaled). Call it on the
        thread that commits, after a commit's answers are out, and only after a small commit: a
        flood's commits lengthen the file once for many messages, and would write it twice. A disk
        that takes no more leaves it alone from then on: commits lengthen the file as before, and
        report the full disk themselves."""
        if self._allocated is None:
            return
        with self._gate.shared():
            info = self.env.info()
        used = (info["last_pgno"] + 1) * self._page
        if self._allocated >= used + AHEAD // 2:
            return
        try:
            fd = os.open(self._data_file, os.O_RDWR | os.O_CLOEXEC)
            try:
                start = max(self._allocated, os.fstat(fd).st_size)  # never over a page LMDB has written
                end = min(used + AHEAD, int(info["map_size"]))
                while start < end:
                    written = os.pwrite(fd, _ZEROS[:end - start], start)
                    if not written:
                        raise OSError(errno.ENOSPC, "the file took no more")
                    start += written
                os.fdatasync(fd)
                self._allocated = start
            finally:
                os.close(fd)
        except OSError as exc:
            log.info("the store at %s keeps no file written ahead of its commits: %s", self.path, exc)
            self._allocated = None

    def read(self, body: Callable[[lmdb.Transaction], T], *, buffers: bool = False) -> T:
        """Run ``body`` in a read transaction. With ``buffers``, gets give memoryviews into the map,
        valid only inside ``body``: a range of a large value is read without copying the rest."""
        for _ in range(_MAX_RETRIES):
            try:
                with self._gate.shared(), self.env.begin(buffers=buffers) as txn:  # type: ignore[call-overload]
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
            size = self.env.info()["map_size"]
            if size >= self.max_map_size:
                raise StoreFull(f"the store at {self.path} is full: its map reached max_map_size ({size} bytes); "
                                "nothing of this write was kept: raise max_map_size, or free space")
            size = min(size * 2, self.max_map_size)
            log.info("growing the LMDB map of %s to %d MiB", self.path, size >> 20)
            self.env.set_mapsize(size)

    def _adopt_new_size(self) -> None:
        with self._gate.exclusive():
            self.env.set_mapsize(0)

    def clear(self, db_names: Iterable[str]) -> None:
        """Empty the named sub-databases, in one transaction."""
        dbs = [self.db[name] for name in db_names]

        def body(txn: lmdb.Transaction) -> None:
            for db in dbs:
                txn.drop(db, delete=False)

        self.write(body)

    def get(self, db_name: str, key: bytes) -> bytes | None:
        db = self.db[db_name]

        def body(txn: lmdb.Transaction) -> bytes | None:
            value = txn.get(key, db=db)
            return None if value is None else bytes(value)

        return self.read(body)
