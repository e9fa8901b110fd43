"""Process-to-process messaging: ping-pong round-trip latency, from the assignments' timestamps.

Two pingpong processes exchange 1,000 rounds through the messenger and the SU (each hop a durable
assignment). A round trip is the time between two consecutive Pings assigned to the same process.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from actorao import Node, examples
from bench.conftest import FIGURES, RATES


@pytest.mark.parametrize("workers", [1, 2])
def test_ping_pong_round_trip(benchmark: Any, tmp_path: Path, workers: int) -> None:
    with Node(tmp_path / "node", workers=workers) as node:
        first, second = node.spawn(examples.wasm("pingpong")), node.spawn(examples.wasm("pingpong"))

        def rounds() -> None:
            node.send(first, {"Action": "Start"}, second)
            deadline = time.monotonic() + 120
            while int(node.dry_run(first, {"Action": "Get"}).output) < 1000 and time.monotonic() < deadline:
                time.sleep(0.02)

        benchmark.pedantic(rounds, rounds=1, iterations=1)
        stamps = [orjson.loads(body)["Timestamp"] for _, body in node._logs.log_range(first, 2, 1 << 40)]
    trips = sorted(later - earlier for earlier, later in itertools.pairwise(stamps))
    p50, p99 = statistics.median(trips), trips[int(len(trips) * 0.99)]
    RATES[f"ping-pong messages, {workers} worker(s)"] = 2000 / benchmark.stats.stats.median
    FIGURES[f"ping-pong round trip p50 / p99, {workers} worker(s)"] = f"{p50:.0f} ms / {p99:.0f} ms"


@pytest.mark.parametrize("workers", [1, 2])
def test_token_transfers_across_processes(benchmark: Any, tmp_path: Path, workers: int) -> None:
    """100 wallets pay each other through one token process: each transfer is a Pay to a wallet, a
    Transfer it sends to the token, and the two notices the token sends back: four evaluations and
    three pushes through the messenger."""
    transfers = 2000
    with Node(tmp_path / "node", workers=workers) as node:
        token = node.spawn(examples.c_wasm("token"))
        wallets = [node.spawn(examples.c_wasm("wallet")) for _ in range(100)]
        node.results(node.send_many([(token, {"Action": "Mint", "Recipient": w, "Quantity": 10**6}, "")
                                     for w in wallets]))
        done = [0]

        def pay() -> None:
            pays = [{"Action": "Pay", "Token": token, "Recipient": wallets[(i * 7 + 1) % 100], "Quantity": 1}
                    for i in range(transfers)]
            node.send_many([(wallets[i % 100], tags, "") for i, tags in enumerate(pays)])
            done[0] += transfers
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                taken = sum(b'"value":"Transfer"' in body for _, body in node._logs.log_range(token, 1, 1 << 40))
                if taken >= done[0]:
                    return
                time.sleep(0.02)

        benchmark.pedantic(pay, rounds=2, iterations=1)
    RATES[f"token transfers (each 4 messages), {workers} worker(s)"] = transfers / benchmark.stats.stats.median
