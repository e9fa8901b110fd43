"""What a supervisor supervises: a child that can be stopped, killed, watched and asked if it is alive.

Two kinds follow one protocol: ``OSProcess``, a child OS process (a Popen and a pidfd, plus an
optional heartbeat pipe), and ``ActorChild``, an in-process pykka actor. A child reports its own exit
through the callback the supervisor gives it, with an exit reason: "normal", "killed", "exit 3",
"signal 15", "hung", or an actor's exception.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pykka

log = logging.getLogger(__name__)

NORMAL = "normal"
HEARTBEAT_FD = "ACTORAO_HEARTBEAT_FD"  # a child that is given a heartbeat pipe finds its fd here


class Child(Protocol):
    """The child protocol: anything a Supervisor can start and stop."""

    pid: int | None  # an OS pid, or None for an in-process actor

    def watch(self, on_exit: Callable[[str], None]) -> None:
        """Call ``on_exit(reason)`` once, when the child ends, however it ends."""

    def stop(self, timeout: float | None) -> None:
        """Ask the child to end, waiting up to ``timeout`` seconds; None means kill at once."""

    def kill(self) -> None: ...

    def is_alive(self) -> bool: ...


def exit_reason(returncode: int) -> str:
    if returncode == 0:
        return NORMAL
    if returncode == -signal.SIGKILL:
        return "killed"
    if returncode < 0:
        return f"signal {-returncode}"
    return f"exit {returncode}"


class OSProcess:
    """A child OS process. Its pidfd becomes readable when it exits, so one thread can watch many.

    With ``heartbeat=True`` it also gets the write end of a pipe, named by $ACTORAO_HEARTBEAT_FD:
    the child writes a byte now and then (``start_heartbeat`` does it from a thread), and a
    supervisor that hears nothing for a while takes the child as hung."""

    def __init__(self, argv: Sequence[str], *, heartbeat: bool = False) -> None:
        env = dict(os.environ)
        pass_fds: tuple[int, ...] = ()
        self.heartbeat_fd: int | None = None
        if heartbeat:
            read_end, write_end = os.pipe()
            os.set_blocking(read_end, False)
            env[HEARTBEAT_FD] = str(write_end)
            pass_fds = (write_end,)
            self.heartbeat_fd = read_end
        try:
            self.popen = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        finally:
            for fd in pass_fds:
                os.close(fd)
        self.pid: int | None = self.popen.pid
        self.sentinel = os.pidfd_open(self.popen.pid)
        self._on_exit: Callable[[str], None] | None = None

    @classmethod
    def python_module(cls, module: str, *args: str, heartbeat: bool = False) -> OSProcess:
        """Run ``python -m module args`` with this interpreter. Unlike multiprocessing's spawn, the
        child never re-imports the parent's ``__main__``."""
        return cls([sys.executable, "-m", module, *args], heartbeat=heartbeat)

    def watch(self, on_exit: Callable[[str], None]) -> None:
        self._on_exit = on_exit

    def exited(self) -> None:
        """Called by the watcher once the pidfd is readable: reap, close, report."""
        self.popen.wait()
        for fd in (self.sentinel, self.heartbeat_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.sentinel, self.heartbeat_fd = -1, None
        if self._on_exit is not None:
            self._on_exit(exit_reason(self.popen.returncode))

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.is_alive():
            try:
                os.kill(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def stop(self, timeout: float | None) -> None:
        """OTP's shutdown: SIGTERM, then SIGKILL after ``timeout``; None is brutal_kill."""
        if timeout is None:
            self.kill()
        else:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.popen.wait()

    def join(self, timeout: float | None = None) -> bool:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this process when the one that started it (``parent``) dies, even by
    SIGKILL; exit now if it already has."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        sys.exit(0)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def start_heartbeat(interval: float = 0.2) -> None:
    """In a child given a heartbeat pipe: beat from a daemon thread until the process ends. A stopped
    (SIGSTOP) or wedged process stops beating. So may a busy one whose GIL a long C call holds (a copy
    of a large memory): the supervisor then looks at its CPU time before taking it as hung."""
    fd = os.environ.get(HEARTBEAT_FD)
    if fd is None:
        return
    beat_fd = int(fd)

    def beat() -> None:
        stop = threading.Event()
        while True:  # the first beat at once: from it on, the supervisor's heartbeat timeout applies
            try:
                os.write(beat_fd, b".")
            except BlockingIOError:  # the supervisor has not read lately: it knows we are alive
                pass
            except OSError:
                return
            stop.wait(interval)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()


def cpu_progress(pid: int) -> tuple[str, int] | None:
    """(state, CPU ticks of all its threads) of OS process ``pid`` from /proc/<pid>/stat, or None when
    it is gone. State "T" or "t" is stopped (SIGSTOP) or traced; the ticks are user plus system time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rindex(b")") + 2 :].split()  # after "pid (comm) ": the name may hold spaces
    return fields[0].decode(), int(fields[11]) + int(fields[12])


class ThreadChild:
    """An in-process child that is one thread (the SU, the MU, cron): subclasses give ``_serve``,
    the thread's work, and ``stop``; this gives the rest of the child protocol. The exit is reported
    once, whether it happens before or after the supervisor starts watching."""

    pid: int | None = None

    def _start_thread(self, name: str) -> None:
        self._exit_lock = threading.Lock()
        self._exit_reason: str | None = None
        self._on_exit: Callable[[str], None] | None = None
        self._thread = threading.Thread(target=self._thread_main, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> str | None:
        """The thread's work; what it returns is the exit reason (None: normal)."""
        raise NotImplementedError

    def _failed(self, exc: BaseException) -> None:
        """Called on the thread when ``_serve`` raised, before the exit is reported."""

    def _thread_main(self) -> None:
        reason = NORMAL
        try:
            reason = self._serve() or NORMAL
        except BaseException as exc:
            log.exception("%s failed", self._thread.name)
            reason = f"{type(exc).__name__}: {exc}"
            self._failed(exc)
        with self._exit_lock:
            self._exit_reason = reason
            on_exit = self._on_exit
        if on_exit is not None:
            on_exit(reason)

    def watch(self, on_exit: Callable[[str], None]) -> None:
        with self._exit_lock:
            self._on_exit = on_exit
            reason = self._exit_reason
        if reason is not None:
            on_exit(reason)

    def stop(self, timeout: float | None) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        self.stop(1.0)

    def is_alive(self) -> bool:
        return self._thread.is_alive()


_ACTOR_EXITS: dict[str, Callable[[str], None]] = {}  # actor urn -> its supervisor's callback
_ACTOR_EXITS_LOCK = threading.Lock()


def _actor_exited(urn: str, reason: str) -> None:
    with _ACTOR_EXITS_LOCK:
        callback = _ACTOR_EXITS.pop(urn, None)
    if callback is not None:
        callback(reason)


class SupervisedActor(pykka.ThreadingActor):
    """A pykka actor that tells its supervisor when it ends. Subclass it for supervised actors."""

    def on_stop(self) -> None:
        _actor_exited(self.actor_urn, NORMAL)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        _actor_exited(self.actor_urn, f"{exception_type.__name__}: {exception_value}")


class ActorChild:
    """An in-process pykka actor as a supervised child."""

    pid: int | None = None

    def __init__(self, actor_class: type[SupervisedActor], *args: Any, **kwargs: Any) -> None:
        self.ref: pykka.ActorRef[Any] = actor_class.start(*args, **kwargs)

    def watch(self, on_exit: Callable[[str], None]) -> None:
        with _ACTOR_EXITS_LOCK:
            _ACTOR_EXITS[self.ref.actor_urn] = on_exit
        if not self.ref.is_alive():  # it ended before we were listening
            _actor_exited(self.ref.actor_urn, NORMAL)

    def stop(self, timeout: float | None) -> None:
        if self.ref.is_alive():
            try:
                self.ref.stop(block=True, timeout=timeout if timeout is not None else 0.01)
            except pykka.Timeout:
                pass

    def kill(self) -> None:
        self.stop(None)

    def is_alive(self) -> bool:
        return bool(self.ref.is_alive())
