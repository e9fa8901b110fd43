"""Supervision of real OS processes, killed and stopped with real signals, and of pykka actors."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actorao.supervisor import (
    GAVE_UP,
    ActorChild,
    ChildSpec,
    Down,
    OSProcess,
    SupervisedActor,
    Supervisor,
    SupervisorChild,
    ThreadChild,
)

SLEEP = "import time; time.sleep(60)"
BEATING = "from actorao.supervisor import start_heartbeat; start_heartbeat(0.05); import time; time.sleep(60)"


def process(script: str = SLEEP, *, heartbeat: bool = False) -> Callable[..., OSProcess]:
    return lambda *args: OSProcess([sys.executable, "-c", script], heartbeat=heartbeat)


def exiting(code: int) -> Callable[..., OSProcess]:
    return process(f"import sys; sys.exit({code})")


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def child(tree: dict[str, Any], child_id: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(c for c in tree["children"] if c["id"] == child_id)
    return entry


def alive(pid: int | None) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        supervisor.stop()


def started(made: list[Supervisor], *args: Any, **kwargs: Any) -> Supervisor:
    supervisor = Supervisor(*args, **kwargs)
    supervisor.start()
    made.append(supervisor)
    return supervisor


def pids(supervisor: Supervisor, *ids: str) -> list[int | None]:
    return [supervisor.pid_of(child_id) for child_id in ids]


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", {"b"}), ("one_for_all", {"a", "b", "c"}), ("rest_for_one", {"b", "c"})],
)
def test_strategies_restart_the_right_children(
    supervisors: list[Supervisor], strategy: str, restarted: set[str]
) -> None:
    specs = [ChildSpec(name, process()) for name in "abc"]
    supervisor = started(supervisors, "test", specs, strategy=strategy)  # type: ignore[arg-type]
    before = dict(zip("abc", pids(supervisor, "a", "b", "c"), strict=True))
    os.kill(before["b"] or 0, signal.SIGKILL)
    assert wait_until(lambda: all(child(supervisor.tree(), n)["restarts"] == 1 for n in restarted))
    after = dict(zip("abc", pids(supervisor, "a", "b", "c"), strict=True))
    assert {name for name in "abc" if after[name] != before[name]} == restarted
    assert all(not alive(before[name]) for name in restarted)
    assert all(child(supervisor.tree(), name)["state"] == "running" for name in "abc")


def test_children_start_in_order_and_stop_in_reverse(supervisors: list[Supervisor]) -> None:
    events: list[str] = []

    def recording(name: str) -> Callable[..., OSProcess]:
        def start(*args: Any) -> OSProcess:
            events.append(f"start {name}")
            return OSProcess([sys.executable, "-c", SLEEP])

        return start

    supervisor = started(supervisors, "test", [ChildSpec(n, recording(n), shutdown="brutal_kill") for n in "abc"])
    for name in "abc":
        supervisor.monitor(name, lambda down: events.append(f"down {down.child}"))
    supervisor.stop()
    assert events == ["start a", "start b", "start c", "down c", "down b", "down a"]


@pytest.mark.parametrize(
    ("restart", "code", "comes_back"),
    [("temporary", 1, False), ("transient", 0, False), ("transient", 3, True), ("permanent", 0, True)],
)
def test_restart_types(supervisors: list[Supervisor], restart: str, code: int, comes_back: bool) -> None:
    spec = ChildSpec("c", exiting(code), restart=restart)  # type: ignore[arg-type]
    supervisor = started(supervisors, "test", [spec], intensity=100)
    if comes_back:
        assert wait_until(lambda: child(supervisor.tree(), "c")["restarts"] >= 1)
    else:
        assert wait_until(lambda: child(supervisor.tree(), "c")["state"] == "exited")
        time.sleep(0.2)
        assert child(supervisor.tree(), "c")["restarts"] == 0


def test_children_asked_to_end_on_the_supervisors_thread_are_not_restarted(
    supervisors: list[Supervisor], tmp_path: Path
) -> None:
    """A worker told STOP exits at once, normally: a permanent child, yet it must not come back while
    the supervisor stops. ``ask`` runs where exits are read, so none it causes is taken for a crash."""
    flag = tmp_path / "stop"
    script = f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.01)"
    supervisor = started(supervisors, "test", [ChildSpec(n, process(script)) for n in "ab"], intensity=100)
    first = pids(supervisor, "a", "b")
    downs: list[str] = []
    for name in "ab":
        supervisor.monitor(name, lambda down: downs.append(down.reason))

    def ask() -> bool:
        flag.touch()
        assert wait_until(lambda: not any(alive(pid) for pid in first))  # both exited before any is stopped
        return True

    supervisor.stop(grace=5.0, ask=ask)
    tree = supervisor.tree()
    assert [(c["restarts"], c["state"]) for c in tree["children"]] == [(0, "stopped"), (0, "stopped")]
    assert downs == ["normal", "normal"]


def test_a_child_whose_restart_fails_to_start_is_tried_again_within_the_intensity(
    supervisors: list[Supervisor]
) -> None:
    """A Ray worker's start can fail (its raylet just lost): the child must not stay dead."""
    starts = [0]

    def start(*args: Any) -> OSProcess:
        starts[0] += 1
        if starts[0] in (2, 3):  # the first two restarts fail
            raise RuntimeError("no room just now")
        return OSProcess([sys.executable, "-c", SLEEP])

    supervisor = started(supervisors, "test", [ChildSpec("a", start)], intensity=5)
    [first] = pids(supervisor, "a")
    os.kill(first or 0, signal.SIGKILL)
    assert wait_until(lambda: child(supervisor.tree(), "a")["state"] == "running" and pids(supervisor, "a")[0] != first)
    assert starts[0] == 4 and child(supervisor.tree(), "a")["restarts"] == 1 and not supervisor.failed
    # A child that never starts again: past the intensity, the supervisor gives up, as for children that die.
    calls = [0]

    def once(*args: Any) -> OSProcess:
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("never again")
        return OSProcess([sys.executable, "-c", SLEEP])

    failing = started(supervisors, "failing", [ChildSpec("a", once)], intensity=2)
    os.kill(pids(failing, "a")[0] or 0, signal.SIGKILL)
    assert wait_until(lambda: failing.failed)
    assert calls[0] == 3  # the first start, then two failed restarts: the third exit is over the intensity


def test_monitors_get_down_with_the_exit_reason(supervisors: list[Supervisor]) -> None:
    downs: list[Down] = []
    supervisor = started(supervisors, "test", [ChildSpec("c", exiting(7), restart="temporary")])
    ref = supervisor.monitor("c", downs.append)
    assert wait_until(lambda: len(downs) == 1)
    assert (downs[0].ref, downs[0].child, downs[0].reason) == (ref, "c", "exit 7")
    killed = started(supervisors, "other", [ChildSpec("k", process(), restart="temporary")])
    killed.monitor("k", downs.append)
    os.kill(killed.pid_of("k") or 0, signal.SIGKILL)
    assert wait_until(lambda: len(downs) == 2)
    assert downs[1].reason == "killed"


def test_a_link_takes_the_partner_down_on_an_abnormal_exit(supervisors: list[Supervisor]) -> None:
    specs = [ChildSpec(name, process()) for name in ("a", "b", "c")]
    supervisor = started(supervisors, "test", specs, intensity=100)
    supervisor.link("a", "b")
    downs: list[Down] = []
    supervisor.monitor("b", downs.append)
    a, b, c = pids(supervisor, "a", "b", "c")
    os.kill(a or 0, signal.SIGKILL)
    assert wait_until(lambda: child(supervisor.tree(), "b")["restarts"] == 1)
    assert not alive(b)
    assert downs[0].reason == "linked exit of a: killed"
    assert supervisor.pid_of("c") == c


def test_past_its_intensity_a_supervisor_stops_everything_and_escalates_to_its_parent(
    supervisors: list[Supervisor],
) -> None:
    inner_pids: list[int | None] = []

    def inner(*args: Any) -> SupervisorChild:
        nested = Supervisor(
            "inner", [ChildSpec("crashy", exiting(1)), ChildSpec("steady", process())], intensity=2, period=30
        )
        child_ = SupervisorChild(nested)
        inner_pids.append(nested.pid_of("steady"))
        return child_

    downs: list[Down] = []
    outer = started(supervisors, "outer", [ChildSpec("inner", inner, type="supervisor")], intensity=1, period=30)
    outer.monitor("inner", downs.append)
    assert wait_until(lambda: outer.failed, 20)
    assert [down.reason for down in downs] == [GAVE_UP, GAVE_UP]  # it gave up, was restarted, gave up again
    assert len(inner_pids) == 2 and not any(alive(pid) for pid in inner_pids)
    assert outer.tree()["state"] == "failed"


def test_a_stopped_child_is_detected_by_its_silent_heartbeat_and_replaced(supervisors: list[Supervisor]) -> None:
    # The timeout leaves a busy box room to start the child's Python (it beats once it has imported):
    # 0.5 s was taken as a hang, before the first beat, on a loaded CI box.
    spec = ChildSpec("w", process(BEATING, heartbeat=True), heartbeat_timeout=3.0)
    health = HealthLog()
    supervisor = started(supervisors, "test", [spec], on_health=health)
    downs: list[Down] = []
    supervisor.monitor("w", downs.append)
    assert health.wait_for("beating")  # from its first beat on, the heartbeat timeout applies
    assert child(supervisor.tree(), "w")["restarts"] == 0
    hung = supervisor.pid_of("w")
    os.kill(hung or 0, signal.SIGSTOP)
    assert wait_until(lambda: child(supervisor.tree(), "w")["restarts"] == 1, seconds=30.0)
    assert downs[0].reason == "hung" and not alive(hung)
    assert supervisor.pid_of("w") != hung


def test_a_child_slow_to_start_is_not_hung_and_one_that_never_beats_is(
    supervisors: list[Supervisor], tmp_path: Path
) -> None:
    """The heartbeat timeout counts from a child's first beat. Before it, the child is starting (a
    loaded box stretched Python's imports past 3 s, and healthy workers were killed), and only the
    start-up timeout applies."""
    beating = tmp_path / "beating"
    slow = (f"import time; time.sleep(4.0); from actorao.supervisor import start_heartbeat; start_heartbeat(0.05); "
            f"open({str(beating)!r}, 'w').close(); time.sleep(60)")  # silent for 4 s, longer than its timeout
    supervisor = started(supervisors, "test", [
        ChildSpec("slow", process(slow, heartbeat=True), heartbeat_timeout=3.0),
        ChildSpec("silent", process(SLEEP, heartbeat=True), heartbeat_timeout=0.5, startup_timeout=1.0),
    ])
    first = supervisor.pid_of("slow")
    assert wait_until(beating.exists, seconds=60.0)
    assert child(supervisor.tree(), "slow")["restarts"] == 0 and supervisor.pid_of("slow") == first
    assert wait_until(lambda: child(supervisor.tree(), "silent")["restarts"] >= 1, seconds=30.0)


def test_simple_one_for_one_starts_and_terminates_children_on_demand(supervisors: list[Supervisor]) -> None:
    template = ChildSpec("worker", lambda index: OSProcess([sys.executable, "-c", SLEEP]), shutdown=1.0)
    supervisor = started(supervisors, "pool", [template], strategy="simple_one_for_one")
    first = supervisor.start_child(0, child_id="worker-0")
    second = supervisor.start_child(1, child_id="worker-1")
    assert supervisor.child_ids() == ["worker-0", "worker-1"]
    os.kill(supervisor.pid_of(second) or 0, signal.SIGKILL)
    assert wait_until(lambda: child(supervisor.tree(), second)["restarts"] == 1)
    gone = supervisor.pid_of(first)
    supervisor.terminate_child(first)
    assert supervisor.child_ids() == ["worker-1"] and not alive(gone)


class Counter(SupervisedActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def add(self, amount: int) -> int:
        if amount < 0:
            raise ValueError("negative")
        self.count += amount
        return self.count

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("asked to crash")
        return super().on_receive(message)


def test_actors_are_supervised_by_the_same_mechanism(supervisors: list[Supervisor]) -> None:
    made: list[ActorChild] = []

    def start(*args: Any) -> ActorChild:
        made.append(ActorChild(Counter))
        return made[-1]

    downs: list[Down] = []
    supervisor = started(supervisors, "actors", [ChildSpec("counter", start)])
    supervisor.monitor("counter", downs.append)
    assert made[0].ref.proxy().add(2).get(timeout=5) == 2
    made[0].ref.tell("crash")  # a failure in on_receive ends a pykka actor
    assert wait_until(lambda: len(made) == 2)
    assert downs[0].reason == "RuntimeError: asked to crash"
    assert made[1].ref.proxy().add(5).get(timeout=5) == 5  # a fresh actor: state started over
    assert threading.active_count() < 50


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="one_for_one"):
        Supervisor("test", [], strategy="all_for_none")  # type: ignore[arg-type]


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_supervisor_holds_descriptors_only_while_it_runs() -> None:
    """A supervisor that is built and never started (a pool's placeholder) holds nothing; one that
    ran, gave up and is then stopped gives back everything it held."""
    before = open_descriptors()
    Supervisor("never-started", [ChildSpec("sleeper", process())])
    assert open_descriptors() == before
    gives_up = Supervisor("gives-up", [ChildSpec("quits", exiting(1))], intensity=0, period=60)
    gives_up.start()
    assert wait_until(lambda: gives_up.failed)
    gives_up.stop()
    assert open_descriptors() == before


# -- busy or hung: a silent child is judged by its progress ----------------------------------------

class HealthLog:
    """The supervisor's on_health callback, as events a test can wait for."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self._cond = threading.Condition()

    def __call__(self, child_id: str, health: str) -> None:
        with self._cond:
            self.seen.append((child_id, health))
            self._cond.notify_all()

    def wait_for(self, health: str, seconds: float = 60.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(seen == health for _, seen in self.seen), seconds)


def silent_after_go(tmp_path: Path, hold: str) -> tuple[str, Callable[[], None]]:
    """A beating child's script that, once told to go, holds its GIL (so its heartbeat thread falls
    silent) in ``hold``; and the function that tells it to go."""
    go = tmp_path / "go"
    os.mkfifo(go)
    script = f"from actorao.supervisor import start_heartbeat; start_heartbeat(0.05); open({str(go)!r}).read(1); {hold}"

    def tell() -> None:
        with open(go, "w") as fifo:
            fifo.write("x")

    return script, tell


def fall_silent(now: list[float], health: HealthLog) -> None:
    """Move the supervisor's clock past the heartbeat timeout until it takes the child as silent (a
    last beat can still arrive while the child goes quiet: then the clock moves again)."""
    for _ in range(20):
        now[0] += 10.0
        if health.wait_for("silent", seconds=3.0):
            return
    raise AssertionError("the child never fell silent")


def silent_child(
    supervisors: list[Supervisor], tmp_path: Path, code: str
) -> tuple[Supervisor, list[float], HealthLog, list[Down], threading.Event, int | None]:
    """A supervised child that beats, then runs ``code`` (which keeps the GIL) and falls silent on the
    supervisor's injected clock: the supervisor, its clock, the health log, the child's downs, an event
    set at its first down, and its pid."""
    script, go = silent_after_go(tmp_path, code)
    now, health = [0.0], HealthLog()
    spec = ChildSpec("w", process(script, heartbeat=True), heartbeat_timeout=3.0)
    supervisor = started(supervisors, "test", [spec], clock=lambda: now[0], on_health=health)
    downs: list[Down] = []
    down = threading.Event()
    supervisor.monitor("w", lambda event: (downs.append(event), down.set()))
    assert health.wait_for("beating")
    pid = supervisor.pid_of("w")
    go()
    fall_silent(now, health)
    return supervisor, now, health, downs, down, pid


def test_a_silent_child_whose_cpu_time_advances_is_busy_not_hung_and_once_stopped_it_is_hung(
    supervisors: list[Supervisor], tmp_path: Path
) -> None:
    # A regular expression that backtracks for ever: a C call that keeps the GIL, as a big copy does.
    supervisor, _, health, downs, down, busy = silent_child(
        supervisors, tmp_path, "import re; re.match(r'(a|aa)+$', 'a' * 90 + 'b')")
    assert health.wait_for("busy")  # its CPU time moved on while it was silent
    assert alive(busy) and supervisor.pid_of("w") == busy and not downs
    assert child(supervisor.tree(), "w")["restarts"] == 0
    os.kill(busy or 0, signal.SIGSTOP)  # now it makes no progress at all
    assert down.wait(60)
    assert downs[0].reason == "hung" and not alive(busy) and ("w", "hung") in health.seen


def test_a_silent_child_that_uses_no_cpu_is_hung(supervisors: list[Supervisor], tmp_path: Path) -> None:
    # libc's sleep called through PyDLL, which keeps the GIL: wedged, neither beating nor computing.
    _, now, _, downs, down, wedged = silent_child(supervisors, tmp_path, "import ctypes; ctypes.PyDLL(None).sleep(600)")
    for _ in range(20):  # a whole timeout after it fell silent, its CPU time has not moved
        now[0] += 10.0
        if down.wait(3.0):
            break
    assert downs and downs[0].reason == "hung" and not alive(wedged)


class _FarChild(ThreadChild):
    """A child on another machine, as a Ray-placed worker there is: no local pid, only beats (answered
    pings), which stop when ``silent`` is set."""

    def __init__(self) -> None:
        self.silent = threading.Event()
        self.ended = threading.Event()
        self._start_thread("far")

    def beats(self) -> int:
        return 0 if self.silent.is_set() else 1

    def _serve(self) -> str | None:
        self.ended.wait()
        return "killed"

    def stop(self, timeout: float | None) -> None:
        self.ended.set()


def test_a_child_on_another_machine_that_falls_silent_is_hung(supervisors: list[Supervisor]) -> None:
    """No probe of a local pid can say it is busy: past the heartbeat timeout, silence is a hang."""
    made: list[_FarChild] = []

    def start() -> _FarChild:
        made.append(_FarChild())
        return made[-1]

    now, health = [0.0], HealthLog()
    spec = ChildSpec("far", start, heartbeat_timeout=3.0)
    supervisor = started(supervisors, "test", [spec], clock=lambda: now[0], on_health=health)
    downs: list[Down] = []
    supervisor.monitor("far", downs.append)
    assert health.wait_for("beating")
    made[0].silent.set()
    for _ in range(20):
        now[0] += 10.0
        if wait_until(lambda: bool(downs), seconds=3.0):
            break
    assert downs[0].reason == "hung" and made[0].ended.is_set() and ("far", "hung") in health.seen
    assert wait_until(lambda: len(made) == 2)  # and replaced
