"""Scaling and baselines through the bench driver's own machinery (what ``actorao bench`` runs):
the compute workload at 1 and 2 workers, and noop and compute beside the in-process ceiling,
multiprocessing.Pool and pykka ThreadingActors (and Ray actors, where ray is installed), all in one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actorao.bench._driver import Case, run_baselines, run_case
from bench.conftest import FIGURES, RATES

SCALING: dict[tuple[str, int], float] = {}


@pytest.mark.parametrize("workload", ["noop", "compute"])
@pytest.mark.parametrize("workers", [1, 2])
def test_workload_through_the_node(benchmark: Any, tmp_path: Path, workload: str, workers: int) -> None:
    processes, messages = (100, 20_000) if workload == "noop" else (16, 4_000)
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["result"] = run_case(Case(workload, workers, processes, 0, messages), tmp_path, lambda n: None)

    benchmark.pedantic(run, rounds=1, iterations=1)
    result = outcome["result"]
    SCALING[(workload, workers)] = result.throughput
    RATES[f"{workload} via the node, {workers} worker(s)"] = result.throughput
    FIGURES[f"{workload} ack->result p50 / p99, {workers} worker(s)"] = (
        f"{result.latency_ms['p50']:.1f} ms / {result.latency_ms['p99']:.1f} ms")
    if workers == 2 and (workload, 1) in SCALING:
        FIGURES[f"{workload} speed-up 1 -> 2 workers"] = f"{result.throughput / SCALING[(workload, 1)]:.2f}x"


@pytest.mark.parametrize("workload", ["noop", "compute"])
def test_baselines_on_the_same_module_calls(benchmark: Any, workload: str) -> None:
    processes, messages = (100, 20_000) if workload == "noop" else (16, 4_000)
    found: list[Any] = []
    benchmark.pedantic(lambda: found.extend(run_baselines(
        workload, [1, 2], processes, messages,
        ["in-process ceiling", "multiprocessing.Pool", "pykka ThreadingActor", "Ray actors",
         "Ray actors, a call per message"], lambda n: None)), rounds=1, iterations=1)
    for baseline in found:
        RATES[f"{workload}: {baseline.name}, {baseline.workers} w"] = baseline.throughput
        node = SCALING.get((workload, baseline.workers if baseline.name != "in-process ceiling" else 2))
        if node:
            FIGURES[f"{workload}: node / {baseline.name} ({baseline.workers} w)"] = f"{node / baseline.throughput:.2f}x"
