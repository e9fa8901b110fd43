"""Signed messages through AO's HTTP API, with signature verification on, against the Python API in
the same run; and what verifying one data item costs.

The HTTP load comes from another OS process (bench/http_load.py) over 64 keep-alive connections, so
client and node do not share a GIL. Each 202 means the assignment is durable, as each Python-API
Ack does.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from actorao import Node, ans104, examples
from actorao.http import HttpServer
from bench.conftest import FIGURES, RATES

MESSAGES = 2000
CONNECTIONS = 64
AO = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1")]


def _signed(signer: ans104.RsaSigner, pid: str, count: int) -> list[bytes]:
    tags = [*AO, ("Type", "Message"), ("Action", "Inc")]
    return [ans104.create_data_item(signer, " ", tags, target=pid, anchor=f"{i:032d}").to_bytes()
            for i in range(count)]


def _spawn_counter(node: Node, signer: ans104.RsaSigner) -> str:
    module = ans104.create_data_item(signer, examples.wasm("counter"), [*AO, ("Type", "Module")])
    node.post_item(module)
    process = ans104.create_data_item(signer, " ", [*AO, ("Type", "Process"), ("Module", module.id),
                                                    ("Scheduler", node.identity)])
    ack = node.post_item(process)
    assert not isinstance(ack, str)
    return ack.get().process


def test_signed_messages_over_http_against_the_python_api(benchmark: Any, tmp_path: Path) -> None:
    signer = ans104.RsaSigner.generate()
    with Node(tmp_path / "node", workers=2) as node, HttpServer(node, port=0) as server:
        pids = [_spawn_counter(node, signer) for _ in range(4)]
        # Python API, the same signed items, acknowledged one by one from 16 threads
        python_items = [item for pid in pids for item in _signed(signer, pid, MESSAGES // 4)]
        with concurrent.futures.ThreadPoolExecutor(CONNECTIONS) as pool:
            started = time.perf_counter()
            acks = list(pool.map(lambda raw: node.post_item(raw).get(), python_items))  # type: ignore[union-attr]
            python_rate = len(acks) / (time.perf_counter() - started)
        # Python API, unsigned and batched: the node's fastest way in
        started = time.perf_counter()
        node.send_many([(pids[i % 4], {"Action": "Inc"}, "") for i in range(MESSAGES)])
        batched_rate = MESSAGES / (time.perf_counter() - started)
        # HTTP, from another OS process
        http_items = [item for pid in pids for item in _signed(signer, pid, MESSAGES // 4)]
        items_file = tmp_path / "items.hex"
        items_file.write_text("\n".join(raw.hex() for raw in http_items))
        outcome: dict[str, Any] = {}

        def load() -> None:
            done = subprocess.run([sys.executable, "-m", "bench.http_load", server.url, str(items_file),
                                   str(CONNECTIONS)], capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            outcome.update(orjson.loads(done.stdout))

        benchmark.pedantic(load, rounds=1, iterations=1)
        assert outcome["statuses"] == {"202": MESSAGES}, outcome
        http_rate = MESSAGES / outcome["seconds"]
        for pid in pids:
            node.catch_up(pid, timeout=120)
        assert sum(int(node.dry_run(pid, {"Action": "Get"}).output) for pid in pids) == 3 * MESSAGES
    RATES["signed over HTTP, verified (64 conns)"] = http_rate
    RATES["signed via Python post_item (64 thr)"] = python_rate
    RATES["unsigned via Python send_many"] = batched_rate
    FIGURES["HTTP / Python post_item, same signed items"] = f"{http_rate / python_rate:.2f}x"
    FIGURES["HTTP / Python send_many (unsigned, batched)"] = f"{http_rate / batched_rate:.2f}x"


def test_verify_cost_per_item(benchmark: Any) -> None:
    signer = ans104.RsaSigner.generate()
    items = _signed(signer, "A" * 43, 200)
    parsed = [ans104.DataItem.parse(raw) for raw in items]

    def verify_all() -> None:
        for item in parsed:
            item.verify()

    benchmark.pedantic(verify_all, rounds=5, iterations=1)
    per_verify = benchmark.stats.stats.median / len(items)
    started = time.perf_counter()
    for raw in items:
        ans104.DataItem.parse(raw)
    per_parse = (time.perf_counter() - started) / len(items)
    FIGURES["verify one 4096-bit RSA-PSS data item"] = f"{per_verify * 1e6:.0f} µs"
    FIGURES["parse one data item (no verify)"] = f"{per_parse * 1e6:.1f} µs"
    FIGURES["verify / parse"] = f"{per_verify / per_parse:.0f}x"
