"""What the workers compute from the log, results and checkpoints, in an LMDB environment of its own
(``<data>/computed``) that is never synced: a worker's commit costs no fsync, so a result is reported
as soon as it is in the page cache, which every process on the machine reads.

That is safe because all of it can be computed again from the log, which is synced:
- a process that dies (kill -9, at any moment) leaves its commits in the page cache, where they stay
  valid, and LMDB's copy-on-write keeps the environment whole without syncs;
- a machine that stops without a sync may leave the file torn. The file ``computed/state`` says in
  which boot (``/proc/sys/kernel/random/boot_id``) the environment was last opened, and whether it was
  synced and closed since. It is written, and synced, before any commit of a boot. An opener that
  finds another boot's environment not closed clean, or one LMDB cannot open, drops it whole and
  never reads a page of it: the workers then evaluate every process again from its log.

Each OS process that has it open holds a shared lock (flock) on the folder. Openers and closers take
turns (``turn.lock``): the first to open in a boot (no other holds the folder) checks, drops, migrates
and marks it open; the last to close syncs it and marks it clean.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb

from actorao.persist._env import Environment

log = logging.getLogger(__name__)

DATABASES = ("results", "checkpoints", "numbered_results", "result_numbers")
# What ``forget`` drops: not the process numbers, which other OS processes have read and keep.
_FORGOTTEN = ("results", "checkpoints", "numbered_results")
FOLDER = "computed"
_STATE = "state"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def current_boot() -> str:
    """This boot of the machine: a new value after every restart of the kernel."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:  # not Linux: no boot id, so every open after a close that was not clean drops it
        return f"unknown boot, process {os.getpid()}"


@dataclass(frozen=True, slots=True)
class State:
    """In which boot the environment was last opened, and whether it was synced and closed after."""

    boot: str
    clean: bool


def read_state(folder: Path) -> State | None:
    try:
        boot, _, mark = (folder / _STATE).read_text().strip().rpartition(" ")
    except FileNotFoundError:
        return None
    return State(boot, mark == "clean") if boot else None


def write_state(folder: Path, state: State) -> None:
    """Replace the state file durably: written, synced, renamed into place, and the folder synced."""
    temporary = folder / f"{_STATE}.new"
    with open(temporary, "w") as out:
        out.write(f"{state.boot} {'clean' if state.clean else 'open'}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, folder / _STATE)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Computed(Environment):
    """The computed environment of the data path ``path``. ``migrate`` (run by the first opener, once
    it is open) moves the results and checkpoints that a store older than this environment kept."""

    def __init__(
        self, path: Path, *, map_size: int, max_map_size: int, migrate: Callable[[Computed], None] | None = None
    ) -> None:
        self.folder = path / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.boot = current_boot()
        self._users = os.open(self.folder, os.O_RDONLY | os.O_CLOEXEC)  # shared while open here
        try:
            with _turn(self.folder):
                if _alone(self._users):
                    self._open_first(path, map_size, max_map_size, migrate)
                else:  # open elsewhere in this boot: checked, and marked open, by its first opener
                    self._open(path, map_size, max_map_size)
                fcntl.flock(self._users, fcntl.LOCK_SH)
        except BaseException:
            os.close(self._users)
            raise

    def _open_first(
        self, path: Path, map_size: int, max_map_size: int, migrate: Callable[[Computed], None] | None
    ) -> None:
        """Drop what an earlier boot left open (or what LMDB cannot open), and mark it open in this
        boot, durably, before any commit."""
        state = read_state(self.folder)
        if state is None or (state.boot != self.boot and not state.clean):
            if (self.folder / "data.mdb").exists():
                log.warning("results and checkpoints at %s were left open by an earlier boot of the machine "
                            "(%s), so they may be torn: dropped; they are computed again from the log",
                            self.folder, "no record" if state is None else state.boot)
            self._remove_files()
        write_state(self.folder, State(self.boot, clean=False))
        try:
            self._open(path, map_size, max_map_size)
        except lmdb.Error as exc:
            log.warning("results and checkpoints at %s cannot be opened (%s): dropped; they are computed "
                        "again from the log", self.folder, exc)
            self._remove_files()
            self._open(path, map_size, max_map_size)
        if migrate is not None:
            migrate(self)

    def _open(self, path: Path, map_size: int, max_map_size: int) -> None:
        super().__init__(path, self.folder, DATABASES, sync=False, metasync=False, map_size=map_size,
                         max_map_size=max_map_size)
        try:
            self.read(lambda txn: [txn.stat(db) for db in self.db.values()])  # a damaged file fails here
        except lmdb.Error:
            self.env.close()
            raise

    @property
    def results(self) -> lmdb._Database:
        return self.db["results"]

    @property
    def checkpoints(self) -> lmdb._Database:
        return self.db["checkpoints"]

    def close(self) -> None:
        """Close it; the last to close syncs it and marks it clean, so the next boot keeps it."""
        with _turn(self.folder):
            if _alone(self._users):
                try:
                    self.env.sync(True)
                    write_state(self.folder, State(self.boot, clean=True))
                except (lmdb.Error, OSError):
                    log.exception("could not sync the results and checkpoints at %s; the next boot drops them",
                                  self.folder)
            super().close()
            os.close(self._users)

    def forget(self) -> None:
        """Drop every result and checkpoint: the workers compute them again from the log."""
        self.clear(_FORGOTTEN)

    def forget_results(self) -> None:
        """Drop every result, and keep the checkpoints."""
        self.clear(("results", "numbered_results"))

    def _remove_files(self) -> None:
        for name in ("data.mdb", "lock.mdb"):
            (self.folder / name).unlink(missing_ok=True)


@contextlib.contextmanager
def _turn(folder: Path) -> Iterator[None]:
    """One opener or closer at a time, across OS processes."""
    with open(folder / "turn.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file lets go of the lock


def _alone(users: int) -> bool:
    """Whether no other OS process has the environment open: they hold ``users`` shared. Taking it
    exclusively succeeds only then; the caller takes it shared again, or closes it."""
    try:
        fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
