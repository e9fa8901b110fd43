"""Recovery after kill -9 of a worker, and throughput before and after scaling from 1 to 2 workers.

Recovery: one worker hosts 1,000 counter processes that have each handled a few messages. The
worker is SIGKILLed, and one message goes to every process at once: we time the first new result
and the last. Scaling: a compute-bound module (about 100 microseconds of integer work a message)
streams on one worker, then on two after node.scale(2), in one run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from actorao import Node, examples
from bench.conftest import FIGURES, RATES

PROCESSES = 1000

# About 100 µs of integer work per message here: an xorshift loop with a fixed iteration count.
BUSY = """
(module
  (memory (export "memory") 2)
  (global $hp (mut i32) (i32.const 65536))
  (data (i32.const 16) "{\\"ok\\":true,\\"response\\":{\\"Output\\":\\"done\\"}}\\00")
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $hp))
    (global.set $hp (i32.add (global.get $hp) (local.get $n)))
    (local.get $p))
  (func (export "handle") (param i32 i32) (result i32)
    (local $i i32) (local $x i64)
    (local.set $x (i64.load (i32.const 0)))
    (if (i64.eqz (local.get $x)) (then (local.set $x (i64.const 88172645463325252))))
    (loop $spin
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
      (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
      (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const 60000))))
    (i64.store (i32.const 0) (local.get $x))
    (global.set $hp (i32.const 65536))
    (i32.const 16)))
"""


@pytest.mark.parametrize("checkpoint_every", [1000, 10], ids=["default policy", "every 10 messages"])
def test_recovery_after_kill_9_of_a_worker_hosting_1000_processes(
    benchmark: Any, tmp_path: Path, checkpoint_every: int
) -> None:
    with Node(tmp_path / "node", workers=1, checkpoint_every=checkpoint_every) as node:
        pids = [node.spawn(examples.wasm("counter")) for _ in range(PROCESSES)]
        for _ in range(20):  # twenty messages each: the state a restarted worker must rebuild
            node.results(node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids]), timeout=120)
        timings: list[tuple[float, float]] = []

        def kill_and_recover() -> None:
            victim = node._pool.supervisor.pid_of("worker-0")
            assert victim is not None
            killed = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            acks = node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids])
            first = node.result(acks[0], timeout=60)
            first_at = time.perf_counter()
            assert first.ok
            node.results(acks, timeout=120)
            timings.append((first_at - killed, time.perf_counter() - killed))

        benchmark.pedantic(kill_and_recover, rounds=3, iterations=1)
    first_s = sorted(t[0] for t in timings)[1]
    all_s = sorted(t[1] for t in timings)[1]
    FIGURES[f"kill -9 to first result / all 1,000 serving (checkpoint every {checkpoint_every})"] = (
        f"{first_s * 1000:.0f} ms / {all_s * 1000:.0f} ms"
    )


def test_compute_bound_throughput_before_and_after_scaling_from_1_to_2_workers(tmp_path: Path) -> None:
    with Node(tmp_path / "node", workers=1) as node:
        pids = [node.spawn(BUSY) for _ in range(40)]
        batch = [(pids[i % 40], {"Action": "Work"}, "") for i in range(800)]

        def rate() -> float:
            started = time.perf_counter()
            acks = node.send_many(batch)
            node.results(acks, timeout=120)
            return len(batch) / (time.perf_counter() - started)

        rate()  # warm: every process loaded
        one = sorted(rate() for _ in range(3))[1]
        node.scale(2)
        rate()
        two = sorted(rate() for _ in range(3))[1]
    RATES["compute-bound, 1 worker"] = one
    RATES["compute-bound, 2 workers (after scale)"] = two
    FIGURES["compute-bound speed-up from scale(1 -> 2)"] = f"{two / one:.2f}x"
