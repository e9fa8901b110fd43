"""OTP supervision: child specs, strategies, restart types, intensity and period, escalation, links,
monitors and heartbeats, for OS processes and in-process actors alike.

A supervisor runs one thread. It starts its children in order and stops them in reverse. It waits on
every OS child's pidfd and heartbeat pipe, and on a wake pipe that actors and callers use, so every
decision about its children is taken on that one thread, in the order events arrived:

- a child exits: DOWN goes to its monitors, linked children are stopped when the exit was abnormal,
  and the child's restart type and the strategy decide what comes back;
- more than ``intensity`` restarts within ``period`` seconds: the supervisor stops all its children
  and ends, and its exit reaches its owner (``on_give_up``) or its parent supervisor, which applies
  its own strategy: escalation;
- an OS child whose heartbeat is silent for longer than its spec's ``heartbeat_timeout`` is looked at
  before it is judged: one that is stopped (SIGSTOP), or that has used no CPU for another timeout, is
  hung, not dead: it is killed with SIGKILL, and restarted like any child that died. One whose CPU time
  still advances is busy (a long C call holds its GIL, or the box is loaded) and is left alone: load
  alone must never stop a node.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing.connection
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from actorao.supervisor._child import NORMAL, Child, OSProcess, cpu_progress

log = logging.getLogger(__name__)

Restart = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
GAVE_UP = "shutdown: reached its maximum restart intensity"
_TICK = 0.1  # seconds between heartbeat checks


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start one child and what to do when it exits.

    ``start(*args)`` returns a started Child. ``shutdown`` is the seconds to wait after asking the
    child to stop (SIGTERM for an OS process) before killing it, or "brutal_kill" to kill at once.
    ``heartbeat_timeout`` applies to OS children started with a heartbeat pipe, and to children that
    count their beats (``beats()``, as a Ray-placed worker's answered pings), from their first beat:
    until then the child is starting (its interpreter importing, which a loaded box can stretch to
    seconds), and ``startup_timeout`` is how long that may take."""

    id: str
    start: Callable[..., Child]
    restart: Restart = "permanent"
    shutdown: float | Literal["brutal_kill"] = 5.0
    type: Literal["worker", "supervisor"] = "worker"
    heartbeat_timeout: float | None = None
    startup_timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Down:
    """What a monitor receives when the child it watches exits."""

    ref: int
    child: str
    pid: int | None
    reason: str


@dataclass(slots=True)
class _Running:
    spec: ChildSpec
    id: str
    args: tuple[Any, ...] = ()
    child: Child | None = None
    generation: int = 0
    restarts: int = 0
    state: str = "starting"
    last_beat: float = 0.0
    beating: bool = False  # it has beaten since it started: heartbeat_timeout applies
    health: str = "starting"  # starting, beating, silent (being watched), busy, hung
    watched_cpu: int | None = None  # while silent: its CPU ticks when last seen to progress
    watched_since: float = 0.0
    killed_for: str | None = None  # why the supervisor killed it: its exit reason, whatever the OS says


class SupervisorFailed(RuntimeError):
    """The supervisor could not start its children, or gave up."""


class Supervisor:
    """Supervises children under one strategy. See the module's docstring."""

    def __init__(
        self,
        name: str,
        specs: list[ChildSpec],
        *,
        strategy: Strategy = "one_for_one",
        intensity: int = 10,
        period: float = 5.0,
        on_restart: Callable[[str], None] | None = None,
        on_give_up: Callable[[str], None] | None = None,
        on_health: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: Callable[[int], tuple[str, int] | None] = cpu_progress,
    ) -> None:
        """``on_health(child id, health)`` hears each change of an OS child's health (see ``_Running``).
        ``clock`` times heartbeats and restart intensity, and ``progress`` reads a child's state and
        CPU time: a test passes a clock it moves."""
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if strategy == "simple_one_for_one" and len(specs) != 1:
            raise ValueError("simple_one_for_one takes exactly one child spec, the template")
        if len({spec.id for spec in specs}) != len(specs):
            raise ValueError("child ids must be unique")
        self.name = name
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self._template = specs[0] if strategy == "simple_one_for_one" else None
        self._children: dict[str, _Running] = (
            {} if self._template is not None else {spec.id: _Running(spec, spec.id) for spec in specs}
        )
        self._restart_times: deque[float] = deque()
        self._on_restart = on_restart
        self._on_give_up = on_give_up
        self._on_health = on_health
        self._clock = clock
        self._progress = progress
        self._monitors: dict[int, tuple[str, Callable[[Down], None]]] = {}
        self._links: dict[str, set[str]] = {}
        self._refs = itertools.count(1)
        self._lock = threading.Lock()
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        # The wake pipe is opened by start() and closed by stop(): a supervisor built and never
        # started (a pool's placeholder) holds no descriptors.
        self._wake_read = self._wake_write = -1
        self._pipe_lock = threading.Lock()  # a late wake never writes into a closed (and reused) descriptor
        self._thread: threading.Thread | None = None
        self.failed = False
        self.reason: str | None = None
        self._running = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the children in order, on the supervisor's own thread: Linux ties a child's
        parent-death signal to the thread that forked it, so no caller's thread may fork them."""
        started: Future[None] = Future()
        if self._wake_read < 0:
            self._wake_read, self._wake_write = os.pipe()
            os.set_blocking(self._wake_write, False)  # a full pipe already wakes the loop
        self._running = True
        self._thread = threading.Thread(target=self._loop, args=(started,), name=f"sup-{self.name}", daemon=True)
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            raise

    def stop(self, grace: float = 0.0, ask: Callable[[], bool] | None = None) -> None:
        """Stop every child, in reverse start order, each by its shutdown spec. With ``grace``, first
        give children that were asked to finish by other means that long to exit by themselves.
        ``ask`` asks them, on the supervisor's thread, so that no exit it causes is taken for a crash
        and restarted; if it returns False (not every child heard), there is no grace."""
        if self._thread is None or not self._thread.is_alive():
            if ask is not None:
                ask()
            self._close_pipe()
            return
        self._call(lambda: self._shutdown(grace, ask))
        self._thread.join()
        self._close_pipe()

    def _close_pipe(self) -> None:
        with self._pipe_lock:
            for fd in (self._wake_read, self._wake_write):
                if fd >= 0:
                    os.close(fd)
            self._wake_read = self._wake_write = -1

    def _call(self, body: Callable[[], Any]) -> Any:
        """Run ``body`` on the supervisor's thread and return what it returns."""
        if threading.current_thread() is self._thread:
            return body()
        done: Future[Any] = Future()
        self._commands.put((body, done))
        self._wake()
        return done.result()

    def _wake(self) -> None:
        with self._pipe_lock:
            if self._wake_write < 0:
                return  # not started, or stopped: no loop is there to read it
            try:
                os.write(self._wake_write, b"x")
            except (BlockingIOError, OSError):
                pass

    # -- the supervisor's thread ----------------------------------------------------------------
    def _loop(self, started: Future[None]) -> None:
        try:
            for running in list(self._children.values()):
                self._start(running)
        except BaseException as exc:
            self._stop_all()
            self._running = False
            started.set_exception(SupervisorFailed(f"{self.name}: a child failed to start: {exc}"))
            return
        started.set_result(None)
        while self._running:
            # Exits wake the loop; heartbeats do not: they are read once a tick, so that children
            # beating five times a second each do not cost a round of this loop per beat.
            exits: dict[int, _Running] = {}
            for running in self._children.values():
                child = running.child
                if isinstance(child, OSProcess) and running.state == "running" and child.sentinel >= 0:
                    exits[child.sentinel] = running
            for ready in multiprocessing.connection.wait([self._wake_read, *exits], timeout=_TICK):
                assert isinstance(ready, int)
                if ready == self._wake_read:
                    os.read(self._wake_read, 4096)
                    continue
                running = exits[ready]
                child = running.child
                if isinstance(child, OSProcess) and running.state == "running" and child.sentinel == ready:
                    child.exited()
            self._read_beats()
            self._run_commands()
            self._check_heartbeats()

    def _read_beats(self) -> None:
        """Note the children that beat since the last tick: an OS process on its heartbeat pipe (non-
        blocking), any other child through its ``beats()``, the count since it was last asked."""
        for running in self._children.values():
            child = running.child
            if running.state != "running" or child is None:
                continue
            if isinstance(child, OSProcess):
                if child.heartbeat_fd is None:
                    continue
                try:
                    beats = len(os.read(child.heartbeat_fd, 4096))
                except (BlockingIOError, OSError):
                    continue
            else:
                count = getattr(child, "beats", None)
                if not callable(count):
                    continue
                beats = count()
            if beats:
                running.last_beat = self._clock()
                running.beating = True
                running.watched_cpu = None
                self._health(running, "beating")

    def _run_commands(self) -> None:
        while True:
            try:
                body, done = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                done.set_result(body())
            except BaseException as exc:
                done.set_exception(exc)

    def _check_heartbeats(self) -> None:
        now = self._clock()
        for running in list(self._children.values()):
            timeout = running.spec.heartbeat_timeout
            if timeout is None or running.state != "running":
                continue
            if not running.beating:
                timeout = max(timeout, running.spec.startup_timeout)
            if now - running.last_beat > timeout and self._hung(running, now, timeout):
                log.warning("%s: %s sent no heartbeat for %.1f s%s, and %s: killing it as hung", self.name,
                            running.id, now - running.last_beat, "" if running.beating else " since it started",
                            running.health)
                self._health(running, "hung")
                self._kill(running, "hung")

    def _hung(self, running: _Running, now: float, timeout: float) -> bool:
        """A silent child is hung when it is stopped, or has used no CPU for ``timeout`` since it fell
        silent (or since it last did); else it is busy. Its state goes in ``health``'s wording."""
        if running.child is None:
            return False
        pid = running.child.pid
        if pid is None:  # on another machine (a Ray-placed worker there): silence is all there is to judge by
            running.health = "silent on another machine"
            return True
        probe = self._progress(pid)
        if probe is None:
            return False  # it is gone: its exit is on its way
        state, cpu = probe
        if state in ("T", "t"):
            running.health = "stopped"
            return True
        if running.watched_cpu is None or cpu > running.watched_cpu or state in ("R", "D"):
            if running.watched_cpu is not None:  # it moved since it fell silent: it works, with the GIL held
                if running.health != "busy":
                    log.info("%s: %s is silent but busy (state %s, CPU ticks %d): not hung", self.name,
                             running.id, state, cpu)
                self._health(running, "busy")
            else:
                self._health(running, "silent")
            running.watched_cpu, running.watched_since = cpu, now
            return False
        if now - running.watched_since > timeout:
            running.health = f"used no CPU for {now - running.watched_since:.1f} s"
            return True
        return False

    def _health(self, running: _Running, health: str) -> None:
        if running.health != health:
            running.health = health
            if self._on_health is not None:
                self._on_health(running.id, health)

    def _kill(self, running: _Running, reason: str) -> None:
        """Kill a child now; it exits with ``reason`` and its restart spec applies as to any exit."""
        assert running.child is not None
        running.killed_for = reason
        running.child.kill()
        if isinstance(running.child, OSProcess) and running.child.sentinel >= 0:
            running.child.popen.wait()
            running.child.exited()

    def _start(self, running: _Running) -> None:
        running.generation += 1
        generation = running.generation
        running.child = running.spec.start(*running.args)
        running.state = "running"
        running.last_beat = self._clock()
        running.beating = False
        running.health, running.watched_cpu = "starting", None

        def on_exit(reason: str) -> None:
            if threading.current_thread() is self._thread:
                self._exited(running, generation, reason)
            else:  # an actor's thread: hand the news to ours
                self._commands.put((lambda: self._exited(running, generation, reason), Future()))
                self._wake()

        running.child.watch(on_exit)
        log.debug("%s: started %s (pid %s)", self.name, running.id, running.child.pid)

    def _stop(self, running: _Running) -> None:
        child = running.child
        if child is None or running.state != "running":
            return
        running.state = "stopping"
        shutdown = running.spec.shutdown
        child.stop(None if shutdown == "brutal_kill" else float(shutdown))
        if isinstance(child, OSProcess) and child.sentinel >= 0:
            child.exited()
        running.state = "stopped"

    def _stop_all(self, order: list[_Running] | None = None) -> None:
        for running in reversed(order if order is not None else list(self._children.values())):
            self._stop(running)

    def _shutdown(self, grace: float, ask: Callable[[], bool] | None = None) -> None:
        if ask is not None and not ask():  # on this thread: no exit it causes is read before all are stopped
            grace = 0.0  # not every child could be asked: none is waited for
        deadline = time.monotonic() + grace
        for running in self._children.values():
            join = getattr(running.child, "join", None)  # an OS process, or a child with a thread to wait on
            if callable(join) and running.state == "running":
                join(max(0.0, deadline - time.monotonic()))
        self._stop_all()
        self._running = False

    # -- exits ----------------------------------------------------------------------------------
    def _exited(self, running: _Running, generation: int, reason: str) -> None:
        if generation != running.generation:
            return  # an earlier incarnation, already dealt with
        if running.killed_for is not None:
            reason, running.killed_for = running.killed_for, None
        stopping = running.state in ("stopping", "stopped")
        running.state = "exited"
        pid = running.child.pid if running.child is not None else None
        self._notify_down(running.id, pid, reason)
        if stopping or not self._running:
            return
        log.warning("%s: child %s (pid %s) exited: %s", self.name, running.id, pid, reason)
        if reason != NORMAL:
            for linked in sorted(self._links.get(running.id, ())):
                other = self._children.get(linked)
                if other is not None and other.state == "running":
                    log.warning("%s: killing %s, linked to %s", self.name, linked, running.id)
                    self._kill(other, f"linked exit of {running.id}: {reason}")
        restart = running.spec.restart
        if restart == "temporary" or (restart == "transient" and reason == NORMAL):
            if self._template is not None:
                del self._children[running.id]
            return
        if self._too_many_restarts():
            self._give_up()
            return
        self._restart_after(running)

    def _too_many_restarts(self) -> bool:
        now = self._clock()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.period:
            self._restart_times.popleft()
        return len(self._restart_times) > self.intensity

    def _restart_after(self, failed: _Running) -> None:
        order = list(self._children.values())
        if self.strategy in ("one_for_one", "simple_one_for_one"):
            again = [failed]
        elif self.strategy == "one_for_all":
            again = order
        else:  # rest_for_one: the failed child and every child started after it
            again = order[order.index(failed) :]
        self._stop_all([running for running in again if running is not failed])
        for running in again:
            try:
                self._start(running)
            except Exception as exc:  # as if it had started and died: tried again, within the intensity
                log.error("%s: %s could not start again: %s", self.name, running.id, exc)
                self._exited(running, running.generation, f"its start failed: {exc}")
                return
            running.restarts += 1  # counted once started: a tree that shows the count shows the new pid
            if self._on_restart is not None:
                self._on_restart(running.id)

    def _give_up(self) -> None:
        log.error("%s: more than %d restarts in %.1f s; stopping its children and exiting",
                  self.name, self.intensity, self.period)
        self.failed = True
        self.reason = GAVE_UP
        self._stop_all()
        self._running = False
        if self._on_give_up is not None:
            self._on_give_up(GAVE_UP)

    # -- dynamic children (simple_one_for_one) --------------------------------------------------
    def start_child(self, *args: Any, child_id: str | None = None) -> str:
        """Start one more child from the template; returns its id."""
        if self._template is None:
            raise ValueError("start_child is for simple_one_for_one supervisors")
        template = self._template

        def body() -> str:
            identity = child_id or f"{template.id}-{next(self._refs)}"
            if identity in self._children:
                raise ValueError(f"{self.name} already has a child {identity!r}")
            running = self._children[identity] = _Running(template, identity, args)
            self._start(running)
            return identity

        return str(self._call(body))

    def terminate_child(self, child_id: str) -> None:
        """Stop a child by its shutdown spec and forget it."""

        def body() -> None:
            running = self._children.pop(child_id)
            self._stop(running)

        self._call(body)

    # -- links and monitors ---------------------------------------------------------------------
    def monitor(self, child_id: str, on_down: Callable[[Down], None]) -> int:
        """Call ``on_down(Down)`` whenever ``child_id`` exits; returns a ref for ``demonitor``."""
        ref = next(self._refs)
        with self._lock:
            self._monitors[ref] = (child_id, on_down)
        return ref

    def demonitor(self, ref: int) -> None:
        with self._lock:
            self._monitors.pop(ref, None)

    def link(self, first: str, second: str) -> None:
        """When one of the two exits abnormally, the other is stopped too (and restarted as usual)."""
        with self._lock:
            self._links.setdefault(first, set()).add(second)
            self._links.setdefault(second, set()).add(first)

    def _notify_down(self, child_id: str, pid: int | None, reason: str) -> None:
        with self._lock:
            watching = [(ref, on_down) for ref, (watched, on_down) in self._monitors.items() if watched == child_id]
        for ref, on_down in watching:
            try:
                on_down(Down(ref, child_id, pid, reason))
            except Exception:
                log.exception("%s: a DOWN handler for %s failed", self.name, child_id)

    # -- introspection --------------------------------------------------------------------------
    def tree(self) -> dict[str, Any]:
        """The live tree: this supervisor, and each child's id, type, pid, restarts and state;
        a child supervisor shows its own children under it."""
        children = []
        for running in list(self._children.values()):
            child = running.child
            entry: dict[str, Any] = {
                "id": running.id,
                "type": running.spec.type,
                "pid": child.pid if child is not None else None,
                "restarts": running.restarts,
                "state": running.state,
            }
            machine = getattr(child, "machine", None)  # a child placed on another machine (a Ray actor)
            if machine is not None:
                entry["machine"] = machine
            subtree = getattr(child, "tree", None)
            if callable(subtree):
                entry.update(subtree())
                entry["id"], entry["restarts"], entry["type"] = running.id, running.restarts, "supervisor"
            children.append(entry)
        state = "failed" if self.failed else ("running" if self._running else "stopped")
        return {"id": self.name, "type": "supervisor", "strategy": self.strategy, "state": state,
                "failed": self.failed, "children": children}

    def pid_of(self, child_id: str) -> int | None:
        running = self._children.get(child_id)
        return running.child.pid if running is not None and running.child is not None else None

    def child_ids(self) -> list[str]:
        return list(self._children)


class SupervisorChild:
    """A supervisor as a child of another: the child protocol over a nested Supervisor. Its exit
    (giving up past its intensity) reaches the parent, which applies its own strategy."""

    pid: int | None = None

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self._on_exit: Callable[[str], None] | None = None
        supervisor._on_give_up = self._gave_up
        supervisor.start()

    def _gave_up(self, reason: str) -> None:
        if self._on_exit is not None:
            self._on_exit(reason)

    def watch(self, on_exit: Callable[[str], None]) -> None:
        self._on_exit = on_exit
        if self.supervisor.failed:
            on_exit(self.supervisor.reason or GAVE_UP)

    def stop(self, timeout: float | None) -> None:
        self.supervisor.stop()

    def kill(self) -> None:
        self.supervisor.stop()

    def is_alive(self) -> bool:
        return not self.supervisor.failed and self.supervisor._running

    def tree(self) -> dict[str, Any]:
        return self.supervisor.tree()
