"""WeaveDrive (AOP-5) inside one instance: the files a module opened, and where each one is read.

The node decides what a path holds and whether the process may read it (a ``Drive``); this room only
keeps the open descriptors, whose positions WeaveDrive's ``read`` and WASI's ``fd_read``/``fd_seek``
share, as emscripten's file system shares them in ao's loader. Open files are state: they go into
snapshots by path and position, and a restored instance opens them again on first use.
"""

from __future__ import annotations

from typing import Protocol

from actorao._exceptions import Trap

HALT = "HALT: FILE NOT FOUND"  # what ao's loader halts with for data the process may not read
FIRST_FD = 3  # after stdin, stdout and stderr, as emscripten's file system numbers them
_SEEK_SET, _SEEK_CUR, _SEEK_END = 0, 1, 2
_STATE_PREFIX = "weavedrive "


class DriveFile(Protocol):
    """A readable file of the drive. ``read`` copies out only the range asked for."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


class Drive(Protocol):
    """What a process may read under WeaveDrive, as of the message being evaluated."""

    def open(self, path: str) -> DriveFile | None:
        """The file at ``path``; None if there is none (the module sees fd 0). Raises
        ``FileNotAdmissible`` for data the process may not read yet."""
        ...

    def reopen(self, path: str) -> DriveFile:
        """A file this process opened before a snapshot, without checking again: it was admissible
        then, and admissibility never ends."""
        ...


class FileNotAdmissible(Trap):
    """The data exists, or may, but no attestation the process can see makes it readable: the
    evaluation halts, as ao's loader halts it."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{HALT}: {path} ({why})")


class _Open:
    __slots__ = ("file", "path", "position")

    def __init__(self, path: str, file: DriveFile | None, position: int) -> None:
        self.path = path
        self.file = file  # None until first use after a restore
        self.position = position


class OpenFiles:
    """The descriptors of one instance. ``drive`` is set per message by whoever evaluates it."""

    def __init__(self) -> None:
        self.drive: Drive | None = None
        self._open: dict[int, _Open] = {}

    def __contains__(self, fd: int) -> bool:
        return fd in self._open

    def open(self, path: str) -> int:
        """A new descriptor for ``path``, the lowest free one; 0 where there is no such file."""
        if self.drive is None:
            return 0  # no WeaveDrive for this process: every file is absent, as aos expects
        file = self.drive.open(path)
        if file is None:
            return 0
        fd = FIRST_FD
        while fd in self._open:
            fd += 1
        self._open[fd] = _Open(path, file, 0)
        return fd

    def _file(self, fd: int) -> tuple[_Open, DriveFile]:
        entry = self._open[fd]
        if entry.file is None:
            if self.drive is None:
                raise Trap(f"Trap: {entry.path} was open before a restore, and no drive is here to read it")
            entry.file = self.drive.reopen(entry.path)
        return entry, entry.file

    def read(self, fd: int, length: int) -> bytes:
        """Up to ``length`` bytes from the descriptor's position, which moves past them."""
        entry, file = self._file(fd)
        length = max(0, min(length, file.size - entry.position))
        data = file.read(entry.position, length) if length else b""
        entry.position += len(data)
        return data

    def seek(self, fd: int, offset: int, whence: int) -> int | None:
        """The new position, or None for a bad ``whence`` or a position before the start."""
        entry, file = self._file(fd)
        base = {_SEEK_SET: 0, _SEEK_CUR: entry.position, _SEEK_END: file.size}.get(whence)
        if base is None or base + offset < 0:
            return None
        entry.position = base + offset
        return entry.position

    def close(self, fd: int) -> bool:
        return self._open.pop(fd, None) is not None

    # -- snapshots --------------------------------------------------------------------------------
    def state(self) -> tuple[tuple[str, int], ...]:
        return tuple((f"{_STATE_PREFIX}{fd} {entry.path}", entry.position) for fd, entry in sorted(self._open.items()))

    def set_state(self, name: str, value: int) -> bool:
        """Take one snapshot entry, if it is ours."""
        if not name.startswith(_STATE_PREFIX):
            return False
        fd, path = name[len(_STATE_PREFIX):].split(" ", 1)
        self._open[int(fd)] = _Open(path, None, value)
        return True

    def clear(self) -> None:
        self._open.clear()
