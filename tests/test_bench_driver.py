"""``actorao bench --smoke``: the driver runs every workload on real nodes, with the baselines and a
load sweep, and writes well-formed results.json, report.md and PNG plots. (Speed itself is measured by
`make bench` and `actorao bench`, never asserted here.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

from actorao.bench import _ao_loader as ao_loader
from tests.test_aos import FOLDER

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_smoke_run_writes_results_report_and_plots(tmp_path: Path) -> None:
    env = {**os.environ, "ACTORAO_AOS_MODULES": str(FOLDER.resolve())}
    done = subprocess.run(
        # Every baseline but Ray's, whose cluster start was half of this run: tests/test_bench_baselines.py runs
        # both Ray baselines, and the targets they feed are checked below on figures of the test's own.
        [sys.executable, "-m", "actorao.cli", "bench", "--smoke", "--workers", "1,2",
         "--baselines", "ceiling,pool,pykka,ao-loader", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [run] = list(tmp_path.iterdir())
    doc = orjson.loads((run / "results.json").read_bytes())

    workloads = {case["workload"] for case in doc["cases"]}
    assert workloads == {"noop", "counter", "token", "aos-eval", "compute"}, doc["skipped"]
    for case in doc["cases"]:
        assert case["workers"] in (1, 2) and case["messages"] > 0
        assert case["throughput"] > 0 and case["seconds"] > 0
        assert 0 <= case["latency_ms"]["p50"] <= case["latency_ms"]["p99"] <= case["latency_ms"]["p99.9"]
        assert case["cpu_cores"] > 0 and case["checkpoint_bytes"] >= 0
        per = case["cpu_us_per_message"]
        # CPU is counted in 10 ms ticks, so one process's share may round to 0 in so short a run; their sum may not
        assert "caller" in per and "worker-0" in per and per[case["busiest"]] > 0
        assert {"caller/scheduler client", "caller/messenger", "caller/results listener", "caller/driver"} <= set(per)
        assert "su-0" in per  # the scheduler shard, an OS process of its own
        assert per["caller/other"] >= 0  # the caller's CPU no named thread accounts for
        assert case["busiest"] in per and "/" not in case["busiest"]
        assert case["projected_ceiling"] == pytest.approx(1e6 / per[case["busiest"]])
    names = {(b["workload"], b["name"]) for b in doc["baselines"]}
    for workload in ("noop", "compute"):
        assert {(workload, "in-process ceiling"), (workload, "multiprocessing.Pool"),
                (workload, "pykka ThreadingActor")} <= names
    assert len({b["checksum"] for b in doc["baselines"] if b["workload"] == "compute"}) == 1
    assert {point["workload"] for point in doc["sweeps"]} == {"counter", "compute"}
    assert doc["failures"] == []
    scaling = doc["summary"]["scaling"]
    assert all(row["efficiency"] == row["speedup"] / row["workers"] for row in scaling)
    assert all(t["workers"] in (None, 1, 2) for t in doc["summary"]["targets"])
    assert [t["target"] for t in doc["summary"]["targets"]] == [
        "compute speed-up, 1 -> 2 workers", "compute: actorao / Ray actors",
        "compute: actorao / Ray actors, a call per message", "noop: actorao / in-process ceiling",
        "counter: 10,000 processes / 100", "aos Eval: our VM / ao's loader, UNSAFE_MEMORY",
        "aos handler: our VM / ao's loader, UNSAFE_MEMORY", "noop: projected ceiling",
        "compute: Ray-placed / local workers", "noop: CPU a message, Ray-placed / local workers",
        "aos: serial round trip, added to the evaluation", "aos: the same, evaluation_cpus set"]
    assert doc["ray_cases"] == [] and doc["summary"]["ray"] == []  # only with --ray
    [ceiling] = [t for t in doc["summary"]["targets"] if t["target"] == "noop: projected ceiling"]
    noop = [case for case in doc["cases"] if case["workload"] == "noop"]
    assert ceiling["measured"] == max(case["projected_ceiling"] for case in noop) > 0 and ceiling["shards"] >= 1
    # ao's loader beside our VM on aos when Node and the loader are here; a reason in the report when not
    loader = doc["aos_loader"]
    if ao_loader.unavailable() is None:
        assert {(row["kind"], row["runner"]) for row in loader} == {
            (kind, runner) for kind in ao_loader.KINDS for runner in ao_loader.RUNNERS}
        assert len({row["memory_sha256"] for row in loader}) == 1
        assert all(t["measured"] is not None for t in doc["summary"]["targets"] if t["target"].startswith("aos "))
    else:
        assert loader == [] and doc["meta"]["ao_loader_missing"] == ao_loader.unavailable()

    # the serial round trip on aos: 20 trips in --smoke, each checked against an evaluation of its message here
    trip = doc["round_trip"]
    assert trip["trips"] == 20
    assert 0 < trip["eval_ms"] <= trip["eval_p90_ms"] and 0 < trip["trip_ms"] <= trip["trip_p90_ms"]
    assert trip["added_ms"] == pytest.approx(trip["trip_ms"] - trip["eval_ms"], abs=0.002)
    [added] = [t for t in doc["summary"]["targets"] if t["target"].startswith("aos: serial round trip")]
    assert (added["measured"], added["workers"], added["shards"], added["goal"]) == (trip["added_ms"], 1, 1, 1.0)
    # and again with NodeConfig.evaluation_cpus: the evaluation on the last CPU, all else off it
    [pinned_target] = [t for t in doc["summary"]["targets"] if t["target"] == "aos: the same, evaluation_cpus set"]
    if len(os.sched_getaffinity(0)) > 1:
        pinned = trip["pinned"]
        assert pinned["trips"] == 20 and pinned["evaluation_cpus"] == [max(os.sched_getaffinity(0))]
        assert 0 < pinned["eval_ms"] <= pinned["eval_p90_ms"] and 0 < pinned["trip_ms"] <= pinned["trip_p90_ms"]
        assert pinned_target["measured"] == pinned["added_ms"]
    else:
        assert "pinned" not in trip and pinned_target["measured"] is None
    # and the transport's own floor beside it: a frame there and back, on ZeroMQ and on a Unix socket
    hop = trip["hop"]
    assert hop["gap_ms"] == 1.0 and 0 < hop["zmq_p50"] <= hop["zmq_p90"] and 0 < hop["unix_p50"] <= hop["unix_p90"]

    report = (run / "report.md").read_text()
    assert f"takes **{hop['zmq_p50']:.3f} ms** at p50 on ZeroMQ's ipc transport" in report
    assert report.startswith("# actorao bench")
    for heading in ("## Targets", "## Workloads", "## Where the time goes", "## Baselines",
                    "## aos: our VM against ao's loader", "## aos: a serial round trip", "## Latency against load"):
        assert heading in report
    assert report.count("\n| compute |") >= 2
    assert ("| added by the node, evaluation_cpus " in report) == (len(os.sched_getaffinity(0)) > 1)
    assert doc["meta"]["worker_threads"] == 4 and "Each worker has 4 evaluation thread(s)" in report
    for plot in ("throughput.png", "latency.png"):
        data = (run / plot).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert f"wrote {run}/" in done.stdout


def test_with_ray_every_case_runs_again_on_ray_placed_workers_and_is_compared(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    stores = Path(tempfile.gettempdir()) / "actorao-cu"  # where Ray workers keep their stores by default
    before = set(stores.iterdir()) if stores.exists() else set()
    done = subprocess.run(
        [sys.executable, "-m", "actorao.cli", "bench", "--smoke", "--workloads", "noop,compute", "--workers", "2",
         "--processes", "4", "--threads", "1", "--ray", "local", "--no-baselines", "--no-sweep",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # On a Ray of its own the workers kept their stores in each case's folder, which is gone.
    assert (set(stores.iterdir()) if stores.exists() else set()) == before
    [run] = list(tmp_path.iterdir())
    doc = orjson.loads((run / "results.json").read_bytes())
    assert doc["ray"] == "local"
    local = {(c["workload"], c["workers"], c["processes"]) for c in doc["cases"]}
    on_ray = {(c["workload"], c["workers"], c["processes"]) for c in doc["ray_cases"]}
    assert local == on_ray == {("noop", 2, 4), ("compute", 2, 4)}
    assert all(case["ray"] and case["throughput"] > 0 for case in doc["ray_cases"])
    assert doc["meta"]["worker_threads"] == 1 and {case["threads"] for case in doc["cases"] + doc["ray_cases"]} == {1}
    assert all(set(case["cpu_us_per_message"]) >= {"worker-0", "worker-1"} for case in doc["ray_cases"])
    rows = {row["workload"]: row for row in doc["summary"]["ray"]}
    assert set(rows) == {"noop", "compute"}
    for workload, row in rows.items():
        [ray_case] = [c for c in doc["ray_cases"] if c["workload"] == workload]
        [twin] = [c for c in doc["cases"] if c["workload"] == workload]
        assert row["ratio"] == pytest.approx(ray_case["throughput"] / twin["throughput"])
        assert row["local_cpu_us"] > 0 and row["ray_cpu_us"] > 0
    targets = {t["target"]: t for t in doc["summary"]["targets"]}
    assert targets["compute: Ray-placed / local workers"]["measured"] == pytest.approx(rows["compute"]["ratio"])
    cpu = targets["noop: CPU a message, Ray-placed / local workers"]
    assert cpu["measured"] == pytest.approx(rows["noop"]["cpu_ratio"]) and cpu["met"] == (cpu["measured"] <= 1.2)
    assert "## Ray-placed workers against local ones (`--ray local`)" in (run / "report.md").read_text()
    assert "noop: CPU a message, Ray-placed / local workers" in done.stdout and "(goal <= 1.2x)" in done.stdout


def test_bad_arguments_get_one_clear_line(tmp_path: Path) -> None:
    for args, needle in [
        (["--workers", "0"], "--workers '0': each must be from 1"),
        (["--messages", "0"], "--messages '0': each must be from 1"),
        (["--messages", "10,20"], "--messages takes one whole number"),
        (["--threads", "0"], "--threads '0': each must be from 1"),
        (["--threads", "1,2"], "--threads takes one whole number"),
        (["--workers", "1,,2"], "--workers takes whole numbers"),
        (["--sizes", "-1"], "--sizes '-1': each must be from 0"),
        (["--workloads", "noop,nope"], "no workload 'nope'"),
        (["--baselines", "dask"], "no baseline 'dask'"),
        (["--quick", "--smoke"], "choose one of --quick and --smoke"),
        (["--evaluation-cpus", "fast"], "--evaluation-cpus: 'fast' is not a CPU number"),
        (["--evaluation-cpus", ",".join(map(str, sorted(os.sched_getaffinity(0))))], "leave at least one"),
    ]:
        done = subprocess.run([sys.executable, "-m", "actorao.cli", "bench", *args, "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and needle in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert not list(tmp_path.iterdir())  # nothing started, nothing written


def test_counter_on_10000_processes_is_a_target_against_100_at_the_same_workers_and_size() -> None:
    from actorao.bench._report import summarize

    def case(processes: int, workers: int, size: int, rate: float) -> dict[str, object]:
        return {"workload": "counter", "processes": processes, "workers": workers, "size": size, "throughput": rate}

    cases = [case(100, 1, 0, 10_000.0), case(10_000, 1, 0, 9_000.0), case(100, 2, 0, 20_000.0),
             case(10_000, 2, 0, 12_000.0), case(100, 2, 1024, 15_000.0), case(10_000, 2, 1024, 15_000.0),
             case(100, 4, 0, 30_000.0)]  # no 10,000 row at 4 workers: that count is not compared
    [target] = [t for t in summarize(cases, [])["targets"] if t["target"] == "counter: 10,000 processes / 100"]
    assert (target["measured"], target["workers"], target["goal"], target["met"]) == (0.6, 2, 0.8, False)
    [none] = [t for t in summarize(cases[:1], [])["targets"] if t["target"] == "counter: 10,000 processes / 100"]
    assert none["measured"] is None and none["met"] is None


def test_the_ray_targets_are_compute_against_each_ray_baseline_at_the_most_workers() -> None:
    from actorao.bench._report import summarize

    cases = [{"workload": "compute", "processes": 8, "workers": workers, "size": 0, "throughput": rate}
             for workers, rate in ((1, 1_000.0), (2, 1_900.0))]
    baselines = [{"workload": "compute", "processes": 8, "name": name, "workers": workers, "throughput": rate}
                 for name, workers, rate in (("Ray actors", 1, 500.0), ("Ray actors", 2, 950.0),
                                             ("Ray actors, a call per message", 1, 100.0),
                                             ("Ray actors, a call per message", 2, 190.0),
                                             ("in-process ceiling", 1, 1_200.0))]
    targets = {t["target"]: t for t in summarize(cases, baselines)["targets"]}
    actors, per_message = targets["compute: actorao / Ray actors"], targets[
        "compute: actorao / Ray actors, a call per message"]
    assert (actors["measured"], actors["workers"], actors["goal"], actors["met"]) == (2.0, 2, 5.0, False)
    assert (per_message["measured"], per_message["workers"], per_message["met"]) == (10.0, 2, True)
    without = {t["target"]: t for t in summarize(cases, baselines[-1:])["targets"]}
    assert without["compute: actorao / Ray actors"]["measured"] is None


def test_the_projected_ceiling_target_is_the_best_noop_case_with_its_workers_and_shards() -> None:
    from actorao.bench._report import summarize, target_figures

    def case(workload: str, workers: int, shards: int, ceiling: float) -> dict[str, object]:
        per = {"caller": 5.0} | {f"su-{i}": 8.0 for i in range(shards)} | {f"worker-{i}": 9.0 for i in range(workers)}
        return {"workload": workload, "processes": 100, "workers": workers, "size": 0, "throughput": 1.0,
                "cpu_us_per_message": per, "projected_ceiling": ceiling}

    cases = [case("noop", 2, 1, 66_000.0), case("noop", 4, 2, 105_000.0), case("counter", 6, 3, 150_000.0)]
    [target] = [t for t in summarize(cases, [])["targets"] if t["target"] == "noop: projected ceiling"]
    # the counter case's higher ceiling is not noop's
    assert (target["measured"], target["workers"], target["shards"], target["met"]) == (105_000.0, 4, 2, True)
    assert target_figures(target) == ("105,000 msgs/s (4 workers, 2 shards)", ">= 100,000 msgs/s")
    assert target_figures(target, compact=True) == ("105,000 msgs/s at 4 w, 2 s", ">= 100,000 msgs/s")
    [low] = [t for t in summarize(cases[:1], [])["targets"] if t["target"] == "noop: projected ceiling"]
    assert (low["measured"], low["shards"], low["met"]) == (66_000.0, 1, False)
    assert target_figures(low)[0] == "66,000 msgs/s (2 workers, 1 shard)"
    [none] = [t for t in summarize(cases[2:], [])["targets"] if t["target"] == "noop: projected ceiling"]
    assert none["measured"] is None and target_figures(none) == ("not measured", ">= 100,000 msgs/s")
    [ratio] = [t for t in summarize([], [])["targets"] if t["target"] == "counter: 10,000 processes / 100"]
    assert target_figures(ratio) == ("not measured", ">= 0.8x")


def test_the_round_trip_target_is_what_the_node_adds_in_ms_at_most_its_goal() -> None:
    from actorao.bench._report import summarize, target_figures

    def target(trip: dict[str, float] | None) -> dict[str, object]:
        [found] = [t for t in summarize([], [], round_trip=trip)["targets"] if t["target"].startswith("aos: serial")]
        return found

    low = target({"trips": 300, "trip_ms": 2.9, "eval_ms": 2.0, "added_ms": 0.9})
    assert (low["measured"], low["met"], low["workers"], low["shards"]) == (0.9, True, 1, 1)
    assert target_figures(low) == ("0.90 ms (1 worker, 1 shard)", "<= 1.0 ms")
    assert target_figures(low, compact=True) == ("0.90 ms at 1 w, 1 s", "<= 1.0 ms")
    high = target({"trips": 300, "trip_ms": 3.2, "eval_ms": 2.0, "added_ms": 1.2})
    assert (high["measured"], high["met"]) == (1.2, False)
    pinned = summarize([], [], round_trip={"added_ms": 1.2, "pinned": {"added_ms": 0.8}})["targets"]
    assert [(t["measured"], t["met"]) for t in pinned if t["target"].startswith("aos: ")][-2:] == [
        (1.2, False), (0.8, True)]
    none = target(None)
    assert none["measured"] is None and none["met"] is None and target_figures(none) == ("not measured", "<= 1.0 ms")


@pytest.mark.parametrize(("argv", "trips"), [(["--smoke"], 20), (["--quick"], 200), ([], 300),
                                             (["--smoke", "--messages", "5"], 5),
                                             (["--quick", "--messages", "100000"], 200)])
def test_the_round_trip_takes_its_modes_count_or_fewer_messages(argv: list[str], trips: int) -> None:
    import argparse

    from actorao.bench._run import add_arguments, make_plan

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert make_plan(parser.parse_args([*argv, "--workloads", "noop"])).trips() == trips


def test_the_vms_own_counter_spread_is_measured_and_reported_beside_the_target() -> None:
    """The in-process ceiling at each process count (the best of its runs, the runs interleaved), and the
    report's sentence with its 10,000 / 100 under the targets."""
    from actorao.bench._driver import CEILING_RUNS, ceiling_spread
    from actorao.bench._report import markdown, summarize

    ticks: list[int] = []
    spread = ceiling_spread("counter", [1, 40], 200, ticks.append)
    assert set(spread) == {"1", "40"} and all(0 < rate < float("inf") for rate in spread.values())
    assert sum(ticks) == 2 * CEILING_RUNS * 200
    doc = {"meta": {"started": "-", "machine": "-", "actorao": "-", "python": "-", "command": "-"}, "cases": [],
           "baselines": [], "sweeps": [], "summary": summarize([], []),
           "counter_ceiling": {"100": 60_000.0, "10000": 48_000.0}}
    report = markdown(doc)
    assert "runs `counter` on 10,000 processes at **0.80x** its rate on 100 (48,000 against 60,000 msgs/s)" in report
    assert report.index("## Targets") < report.index("**0.80x**") < report.index("## Workloads")
    doc["counter_ceiling"] = None
    assert "The VM alone" not in markdown(doc)


def test_the_transports_own_floor_is_reported_under_the_targets_beside_the_round_trip() -> None:
    from actorao.bench._report import markdown, summarize

    trip = {"trips": 300, "trip_ms": 3.0, "trip_p90_ms": 3.5, "eval_ms": 1.8, "eval_p90_ms": 1.9, "added_ms": 1.2}
    doc = {"meta": {"started": "-", "machine": "-", "actorao": "-", "python": "-", "command": "-"}, "cases": [],
           "baselines": [], "sweeps": [], "summary": summarize([], [], round_trip=trip), "round_trip": trip}
    assert "ZeroMQ" not in markdown(doc)  # not measured: nothing said
    trip["hop"] = {"gap_ms": 1.0, "unix_p50": 0.02, "unix_p90": 0.03, "zmq_p50": 0.16, "zmq_p90": 0.2,
                   "zmq_over_unix": 8.0}
    report = markdown(doc)
    assert ("its receiver asleep for 1 ms before it, takes **0.160 ms** at p50 on ZeroMQ's ipc transport, which "
            "every hop of the node takes, against 0.020 ms on a Unix socket (8.0x)") in report
    assert "about **0.24 ms** of what the node adds to an evaluation is the transport's alone" in report
    assert report.index("## Targets") < report.index("**0.160 ms**") < report.index("## Workloads")


def test_evaluation_cpus_go_to_every_local_case_and_never_to_a_ray_placed_one() -> None:
    import argparse
    from dataclasses import replace

    from actorao.bench import _baselines as baselines
    from actorao.bench._driver import CaseResult
    from actorao.bench._run import add_arguments, make_plan

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    lane = max(os.sched_getaffinity(0))
    plan = make_plan(parser.parse_args(["--smoke", "--workloads", "noop", "--no-baselines", "--no-sweep",
                                        "--evaluation-cpus", str(lane)]))
    assert plan.cases and all(case.evaluation_cpus == {lane} for case in plan.cases)
    assert plan.cases[0].label.endswith(f", evaluating on CPU {lane}")
    if baselines.ray_available():  # Ray places its workers: the pin is for this machine's only
        on_ray = make_plan(parser.parse_args(["--smoke", "--workloads", "noop", "--no-baselines", "--no-sweep",
                                              "--evaluation-cpus", str(lane), "--ray", "local"]))
        assert {(case.ray, case.evaluation_cpus) for case in on_ray.cases} == {(False, frozenset({lane})), (True, None)}
    unset = make_plan(parser.parse_args(["--smoke", "--workloads", "noop", "--no-baselines", "--no-sweep"]))
    assert all(case.evaluation_cpus is None and "evaluating" not in case.label for case in unset.cases)
    result = CaseResult(plan.cases[0], 1.0, 1.0, 1, {}, 1.0, 0, 0.1, 0)
    assert result.as_json()["evaluation_cpus"] == [lane]
    assert "evaluation_cpus" not in replace(result, case=unset.cases[0]).as_json()
