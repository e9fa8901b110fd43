"""NodeConfig.evaluation_cpus: the workers' evaluation threads on those CPUs, every other thread of the
node (its own, the shards', the workers' main, heartbeat and ZeroMQ threads) on the rest; bad sets named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actorao import InvalidMessage, Node, NodeConfig, examples
from actorao._cpus import parse, pin, pinned

CPUS = frozenset(os.sched_getaffinity(0))
two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="a split of the cores needs two of them")


def test_cpu_lists_parse_as_the_kernel_spells_them() -> None:
    assert parse("1") == {1}
    assert parse("0,2-4, 7") == {0, 2, 3, 4, 7}
    for text in ("", "a", "3-", "4-2", "1,,2", "-1"):
        with pytest.raises(ValueError):
            parse(text)


def test_a_set_the_kernel_refuses_leaves_the_thread_where_it_was(caplog: pytest.LogCaptureFixture) -> None:
    """A restarted worker or shard whose CPUs went away runs unpinned, with a warning, rather than dying."""
    gone = max(CPUS) + 1000
    with caplog.at_level("WARNING", logger="actorao._cpus"):
        assert pin({gone}) is False
    assert os.sched_getaffinity(0) == CPUS
    assert f"cannot keep this thread on CPUs {gone}" in caplog.text
    assert pin(()) is False and os.sched_getaffinity(0) == CPUS
    with pinned({min(CPUS)}):
        assert os.sched_getaffinity(0) == {min(CPUS)}
    assert os.sched_getaffinity(0) == CPUS


def test_evaluation_cpus_come_from_the_environment_or_as_numbers() -> None:
    assert NodeConfig.from_env({"ACTORAO_EVALUATION_CPUS": "2-3"}).evaluation_cpus == {2, 3}
    assert NodeConfig(evaluation_cpus="1,3").evaluation_cpus == {1, 3}  # type: ignore[arg-type]
    assert NodeConfig(evaluation_cpus=[5]).evaluation_cpus == frozenset({5})  # type: ignore[arg-type]
    assert NodeConfig().evaluation_cpus is None
    with pytest.raises(InvalidMessage) as caught:
        NodeConfig.from_env({"ACTORAO_EVALUATION_CPUS": "one"})
    assert caught.value.field == "ACTORAO_EVALUATION_CPUS" and "'one'" in str(caught.value)


@pytest.mark.parametrize(("value", "says"), [(frozenset(), "names no CPU"), ({-1}, "-1 is not a CPU number"),
                                             ({True}, "True is not a CPU number"), (3, "expected CPU numbers"),
                                             ("2-1", "runs backwards")])
def test_a_bad_set_of_cpus_is_refused_with_its_name(value: object, says: str) -> None:
    with pytest.raises(InvalidMessage, match=says) as caught:
        NodeConfig(evaluation_cpus=value)  # type: ignore[arg-type]
    assert caught.value.field == "evaluation_cpus"


def test_ray_placed_workers_cannot_be_pinned_here() -> None:
    with pytest.raises(InvalidMessage, match="Ray places them") as caught:
        NodeConfig(evaluation_cpus={0}, ray="local")
    assert caught.value.field == "evaluation_cpus"


@pytest.mark.parametrize("which", ["all", "absent"])
def test_a_node_refuses_cpus_it_cannot_split_before_it_starts(tmp_path: Path, counter: bytes, which: str) -> None:
    wanted = set(CPUS) if which == "all" else {max(CPUS) + 1000}
    says = "leave at least one" if which == "all" else f"CPU {max(CPUS) + 1000} is not one this process may use"
    with pytest.raises(InvalidMessage, match=says) as caught:
        Node(tmp_path / "node", workers=1, schedulers=1, evaluation_cpus=wanted)
    assert caught.value.field == "evaluation_cpus"
    assert os.sched_getaffinity(0) == CPUS
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:  # nothing was left holding the folder
        assert node.result(node.send(node.spawn(counter), {"Action": "Inc"})).output == "1"


def _threads(pid: int) -> dict[int, frozenset[int]]:
    """Each OS thread of ``pid``, and the CPUs it may run on."""
    return {int(task): frozenset(os.sched_getaffinity(int(task))) for task in os.listdir(f"/proc/{pid}/task")}


@two_cpus
def test_evaluation_threads_run_on_their_cpus_and_every_other_thread_off_them(tmp_path: Path, counter: bytes) -> None:
    lane = max(CPUS)
    rest = CPUS - {lane}
    before = _threads(os.getpid())
    config = NodeConfig(path=tmp_path / "node", workers=2, schedulers=1, worker_threads=3, evaluation_cpus={lane})
    with Node(config) as node:
        assert node.control_cpus == rest
        assert os.sched_getaffinity(0) == CPUS  # the caller's thread is left where it was
        pids = [node.spawn(counter) for _ in range(4)]
        for pid in pids:
            assert node.result(node.send(pid, {"Action": "Inc"})).output == "1"
        started = {task: cpus for task, cpus in _threads(os.getpid()).items() if task not in before}
        assert started and set(started.values()) == {rest}  # listeners, supervisors, ZeroMQ's I/O threads
        shards, workers = node.scheduler_processes(), node.worker_processes()
        assert len(shards) == 1 and len(workers) == 2
        for shard in shards:
            assert set(_threads(shard["pid"]).values()) == {rest}
        for worker in workers:
            found = list(_threads(worker["pid"]).values())
            assert found.count(frozenset({lane})) == 3  # its evaluation threads (worker_threads)
            assert [cpus for cpus in found if cpus != {lane}] and all(cpus == rest for cpus in found if cpus != {lane})
        # Small messages too are evaluated on the lanes: a worker's main thread, which runs them itself
        # otherwise, stays off the evaluation CPUs. Each of these spins about 180,000 fuel (small enough
        # to run held), so their evaluation outweighs the main thread's own work many times over.
        spinners = [node.spawn(SPINNER) for _ in range(4)]
        by_worker = {worker["pid"]: [pid for pid in spinners if f"worker-{node.worker_of(pid)}" == worker["id"]]
                     for worker in workers}
        worker = max(by_worker, key=lambda found: len(by_worker[found]))
        lanes = [task for task, cpus in _threads(worker).items() if cpus == {lane}]
        before_lanes, before_main = sum(_ran_ns(worker, task) for task in lanes), _ran_ns(worker, worker)
        acks = node.send_many([(pid, {"Action": "Inc"}, "") for pid in by_worker[worker]] * 100)
        assert {result.output for result in node.results(acks)} == set(map(str, range(1, 101)))
        on_lanes = sum(_ran_ns(worker, task) for task in lanes) - before_lanes
        on_main = _ran_ns(worker, worker) - before_main
        # 1:5 to 1:10 here; with the main thread evaluating the processes it holds loaded, 3:2
        assert on_main < on_lanes / 2, (on_main, on_lanes)
    assert os.sched_getaffinity(0) == CPUS


# counter, with an Inc that first spins 15,000 turns: about 180,000 fuel, under the 250,000 of a held message
SPINNER = examples.wat("counter").replace(
    "(then (i64.store",
    "(then (i32.store (i32.const 8) (i32.const 0)) (block $out (loop $spin "
    "(br_if $out (i32.ge_u (i32.load (i32.const 8)) (i32.const 15000))) "
    "(i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1))) (br $spin))) (i64.store",
    1,
)


def _ran_ns(pid: int, task: int) -> int:
    """Nanoseconds thread ``task`` of ``pid`` has run on a CPU (the scheduler's own count)."""
    with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
        return int(stat.read().split()[0])
