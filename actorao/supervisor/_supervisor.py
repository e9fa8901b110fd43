"""OTP-style supervision of OS processes: child specs, restart types, intensity and period.

A supervisor starts its children in order and stops them in reverse. A monitor thread waits on every
child's sentinel; when one exits, its restart type decides whether it comes back. More than
``intensity`` restarts within ``period`` seconds means something is deeply wrong: the supervisor
stops every child and reports itself failed to whoever owns it (``on_give_up``).
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

Restart = Literal["permanent", "transient", "temporary"]


class OSProcess:
    """A child OS process: a Popen plus a pidfd, which becomes readable when the process exits, so a
    monitor can wait on many children at once without polling."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL)
        self.pid = self.popen.pid
        self.sentinel = os.pidfd_open(self.pid)

    @classmethod
    def python_module(cls, module: str, *args: str) -> OSProcess:
        """Run ``python -m module args`` with this interpreter. Unlike multiprocessing's spawn, the
        child never re-imports the parent's ``__main__``."""
        return cls([sys.executable, "-m", module, *args])

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.is_alive():
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start one child and what to do when it exits.

    ``start`` returns a started OSProcess. ``shutdown`` is seconds to wait after
    SIGTERM before SIGKILL, or "brutal_kill" for SIGKILL at once.
    """

    id: str
    start: Callable[[], OSProcess]
    restart: Restart = "permanent"
    shutdown: float | Literal["brutal_kill"] = 5.0
    type: Literal["worker", "supervisor"] = "worker"


@dataclass(slots=True)
class _Running:
    spec: ChildSpec
    process: OSProcess | None = None
    restarts: int = 0
    state: str = "starting"


class Supervisor:
    """Supervises OS processes with the ``one_for_one`` strategy: a child that dies is restarted alone."""

    def __init__(
        self,
        name: str,
        specs: list[ChildSpec],
        *,
        strategy: str = "one_for_one",
        intensity: int = 10,
        period: float = 5.0,
        on_restart: Callable[[str], None] | None = None,
        on_give_up: Callable[[str], None] | None = None,
    ) -> None:
        if strategy != "one_for_one":
            raise ValueError(f"strategy {strategy!r}: only 'one_for_one' is built so far")
        if len({spec.id for spec in specs}) != len(specs):
            raise ValueError("child ids must be unique")
        self.name = name
        self.intensity = intensity
        self.period = period
        self._children = {spec.id: _Running(spec) for spec in specs}
        self._restart_times: deque[float] = deque()
        self._on_restart = on_restart
        self._on_give_up = on_give_up
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        self._monitor: threading.Thread | None = None
        self.failed = False
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the children in order, from the supervisor's own long-lived thread: Linux ties a
        child's parent-death signal to the thread that forked it, so children must not be forked
        by a caller's thread that may end first."""
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                for running in self._children.values():
                    self._start_child(running)
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                started.set()
            self._watch()

        self._monitor = threading.Thread(target=run, name=f"{self.name}-monitor", daemon=True)
        self._monitor.start()
        started.wait()
        if failure:
            self._monitor.join()
            self._monitor = None
            self.stop()
            raise failure[0]

    def _start_child(self, running: _Running) -> None:
        running.process = running.spec.start()
        running.state = "running"
        log.debug("%s: started %s as pid %s", self.name, running.spec.id, running.process.pid)

    def stop(self, grace: float = 0.0) -> None:
        """Stop every child, in reverse start order, each by its shutdown spec. With ``grace``, first
        give children that were asked to finish (by a message of their own) that long to exit."""
        with self._lock:
            self._stopping = True
        os.write(self._wake_write, b"x")
        if self._monitor is not None:
            self._monitor.join()
        deadline = time.monotonic() + grace
        for running in self._children.values():
            if running.process is not None:
                running.process.join(max(0.0, deadline - time.monotonic()))
        for running in reversed(list(self._children.values())):
            self._stop_child(running)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _stop_child(self, running: _Running) -> None:
        process = running.process
        if process is None:
            return
        if process.is_alive():
            if running.spec.shutdown == "brutal_kill":
                process.kill()
            else:
                process.terminate()
                process.join(running.spec.shutdown)
                if process.is_alive():
                    process.kill()
        process.join()
        running.state = "stopped"

    # -- monitoring -----------------------------------------------------------------------------
    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                sentinels = {
                    running.process.sentinel: running
                    for running in self._children.values()
                    if running.process is not None and running.state == "running"
                }
            ready = multiprocessing.connection.wait([self._wake_read, *sentinels])
            with self._lock:
                if self._stopping:
                    return
            for handle in ready:
                if handle in sentinels:
                    self._child_exited(sentinels[handle])

    def _child_exited(self, running: _Running) -> None:
        assert running.process is not None
        running.process.join()
        code = running.process.exitcode
        spec = running.spec
        log.warning("%s: child %s (pid %s) exited with %s", self.name, spec.id, running.process.pid, code)
        if spec.restart == "temporary" or (spec.restart == "transient" and code == 0):
            running.state = "exited"
            return
        now = time.monotonic()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.period:
            self._restart_times.popleft()
        if len(self._restart_times) > self.intensity:
            log.error("%s: more than %d restarts in %.1f s; giving up", self.name, self.intensity, self.period)
            self.failed = True
            with self._lock:
                self._stopping = True
            for other in reversed(list(self._children.values())):
                self._stop_child(other)
            if self._on_give_up is not None:
                self._on_give_up(self.name)
            return
        running.restarts += 1
        self._start_child(running)
        if self._on_restart is not None:
            self._on_restart(spec.id)

    # -- introspection --------------------------------------------------------------------------
    def tree(self) -> dict[str, object]:
        """The live tree: this supervisor and each child's id, pid, restarts and state."""
        children = []
        for running in self._children.values():
            process = running.process
            alive = process is not None and process.is_alive()
            children.append(
                {
                    "id": running.spec.id,
                    "type": running.spec.type,
                    "pid": process.pid if process is not None else None,
                    "restarts": running.restarts,
                    "state": running.state if alive or running.state != "running" else "dead",
                }
            )
        return {"id": self.name, "type": "supervisor", "failed": self.failed, "children": children}

    def pid_of(self, child_id: str) -> int | None:
        process = self._children[child_id].process
        return process.pid if process is not None else None
