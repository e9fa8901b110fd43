"""Supervision of real OS processes, killed with real signals."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import pytest

from actorao.supervisor import ChildSpec, OSProcess, Supervisor


def sleeper(code: int | None = None) -> Callable[[], OSProcess]:
    """A child that sleeps (or exits at once with ``code``)."""
    script = "import time; time.sleep(60)" if code is None else f"import sys; sys.exit({code})"
    return lambda: OSProcess([sys.executable, "-c", script])


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def child(tree: dict[str, object], child_id: str) -> dict[str, object]:
    children = tree["children"]
    assert isinstance(children, list)
    return next(c for c in children if c["id"] == child_id)


def test_a_killed_permanent_child_is_restarted_alone() -> None:
    restarted: list[str] = []
    supervisor = Supervisor(
        "test", [ChildSpec("a", sleeper()), ChildSpec("b", sleeper())], on_restart=restarted.append
    )
    supervisor.start()
    try:
        a_pid, b_pid = supervisor.pid_of("a"), supervisor.pid_of("b")
        assert a_pid is not None
        os.kill(a_pid, signal.SIGKILL)
        assert wait_until(lambda: supervisor.pid_of("a") != a_pid)
        assert restarted == ["a"]
        assert supervisor.pid_of("b") == b_pid
        tree = supervisor.tree()
        assert child(tree, "a")["restarts"] == 1 and child(tree, "a")["state"] == "running"
        assert child(tree, "b")["restarts"] == 0
    finally:
        supervisor.stop()
    assert all(c["state"] == "stopped" for c in supervisor.tree()["children"])  # type: ignore[union-attr]


@pytest.mark.parametrize(("restart", "code", "comes_back"), [
    ("temporary", 1, False), ("transient", 0, False), ("transient", 3, True), ("permanent", 0, True),
])
def test_restart_types(restart: str, code: int, comes_back: bool) -> None:
    supervisor = Supervisor("test", [ChildSpec("c", sleeper(code), restart=restart)], intensity=100)  # type: ignore[arg-type]
    supervisor.start()
    try:
        if comes_back:
            assert wait_until(lambda: child(supervisor.tree(), "c")["restarts"] >= 1)  # type: ignore[operator]
        else:
            assert wait_until(lambda: child(supervisor.tree(), "c")["state"] == "exited")
            time.sleep(0.2)
            assert child(supervisor.tree(), "c")["restarts"] == 0
    finally:
        supervisor.stop()


def test_past_its_intensity_the_supervisor_stops_everything_and_escalates() -> None:
    gave_up = threading.Event()
    supervisor = Supervisor(
        "test",
        [ChildSpec("crashy", sleeper(1)), ChildSpec("steady", sleeper())],
        intensity=3,
        period=30.0,
        on_give_up=lambda name: gave_up.set(),
    )
    supervisor.start()
    steady = supervisor.pid_of("steady")
    try:
        assert gave_up.wait(20)
        assert supervisor.failed
        assert child(supervisor.tree(), "crashy")["restarts"] == 3
        assert steady is not None
        assert wait_until(lambda: not _alive(steady))
    finally:
        supervisor.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_shutdown_escalates_from_sigterm_to_sigkill() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    spec = ChildSpec("stubborn", lambda: OSProcess([sys.executable, "-c", stubborn]), shutdown=0.5)
    supervisor = Supervisor("test", [spec])
    supervisor.start()
    pid = supervisor.pid_of("stubborn")
    assert pid is not None
    time.sleep(0.3)  # let it install its handler
    supervisor.stop()
    assert not _alive(pid)


def test_only_one_for_one_is_built_yet() -> None:
    with pytest.raises(ValueError, match="one_for_one"):
        Supervisor("test", [], strategy="one_for_all")
