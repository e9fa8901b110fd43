"""End-to-end send -> result throughput of the counter module, beside the in-process ceiling.

Each round sends MESSAGES messages spread over PROCESSES counter processes, as send_many_nowait
calls of BATCH messages each (durable, group-committed), and then waits for every result. The ceiling is the
same module called directly through the same VM path in this process, with no SU, no LMDB and no
sockets. Read the ratio, not the seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actorao import Node, examples
from actorao.message import Assignment, Message, module_json, new_id, with_ao_tags
from actorao.vm import Evaluator, Instance, compile_module
from bench.conftest import CEILING, RATES

MESSAGES = 20_000
BATCH = 1_000
PROCESSES = 100
ROUNDS = 5


def record(benchmark: Any, label: str) -> None:
    rate = MESSAGES / benchmark.stats.stats.median
    benchmark.extra_info["messages_per_second"] = round(rate)
    RATES[label] = rate


def test_ceiling_direct_wasmtime_calls(benchmark: Any) -> None:
    compiled = compile_module(examples.wasm("counter"))
    instances = [Instance(compiled, memory_limit=1 << 30) for _ in range(PROCESSES)]
    owner, pid = new_id(b"o"), new_id(b"p")
    body = module_json(
        Message(new_id(b"m"), owner, pid, with_ao_tags({"Action": "Inc"}, "Message")),
        Assignment(pid, 1, new_id(b"m"), 1_700_000_000_000, pid),
    )
    env = b'{"Process":{"Id":"%s","Owner":"%s","Tags":[]}}' % (pid.encode(), owner.encode())
    evaluator = Evaluator()

    def run() -> None:
        for i in range(MESSAGES):
            evaluator.evaluate(instances[i % PROCESSES], body, env)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    record(benchmark, CEILING)


@pytest.fixture(params=[1, 2], ids=["workers=1", "workers=2"])
def node_with_counters(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Node, list[str]]]:
    with Node(tmp_path / "node", workers=request.param) as node:
        pids = [node.spawn(examples.wasm("counter")) for _ in range(PROCESSES)]
        yield node, pids


def test_end_to_end_send_to_result(benchmark: Any, node_with_counters: tuple[Node, list[str]]) -> None:
    node, pids = node_with_counters
    batches = [
        [(pids[i % PROCESSES], {"Action": "Inc"}, "") for i in range(start, start + BATCH)]
        for start in range(0, MESSAGES, BATCH)
    ]

    def run() -> None:
        # A client streaming batches: the node commits and evaluates one while the next is built.
        pending = [node.send_many_nowait(batch) for batch in batches]
        acks = [ack for future in pending for ack in future.get(timeout=120)]
        results = node.results(acks, timeout=120)
        assert all(result.ok for result in results)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    record(benchmark, f"end to end, {node.workers} worker(s)")
