"""A serial durable round trip on aos: ``send``, then ``result``, one message at a time, on a node of one
worker and one scheduler shard, against the evaluation of the same message in this process. What the
trip adds to the evaluation, at p50, is issue 11's last latency target (at most 1 ms).

Each evaluation here takes the very bytes the worker took: the trip's message as the log holds it, and
the env built from the spawn and the module as the worker builds it; its result must be the stored
one. (A made-up message with one tag and an env without tags costs aos about a quarter less than the
node's own message with its four tags and the process's and module's tags: that is no cost of the
trip.) Trips and evaluations alternate, so both see the same box.

``bench/round_trip.py`` loads this file by its path, so that it measures an older checkout's node with
this same code: it imports actorao only inside ``measure``, and takes the env's maker as given
(``env_of``), since an older checkout keeps it elsewhere.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CODE = "x = (x or 0) + 1; return x"
WARM = 20  # the worker's first messages load the process: not counted
TRIPS = {"full": 300, "quick": 200, "smoke": 20}


def measure(
    wasm: bytes, trips: int, folder: Path, tick: Callable[[int], None] | None = None,
    env_of: Callable[[bytes, str, bytes], bytes] | None = None, evaluation_cpus: frozenset[int] | None = None,
) -> dict[str, Any]:
    """``trips`` round trips and as many evaluations here, after WARM of each; their p50s and p90s in
    ms, and the p50 the trip adds to the evaluation (``added_ms``). The node lives in ``folder``.
    ``env_of`` makes the env from the spawn, the module's id and its metadata (``process_env``). With
    ``evaluation_cpus``, the node's evaluation threads run on those CPUs and the rest of it elsewhere
    (``NodeConfig.evaluation_cpus``), and so does this thread while it measures, as the README advises a
    serial caller."""
    import orjson

    from actorao import Node
    from actorao.vm import Evaluator, Instance, compile_module

    if env_of is None:
        from actorao.message import process_env

        env_of = process_env

    instance = Instance(compile_module(wasm), memory_limit=1 << 30, fuel=10**12)
    evaluator = Evaluator(fuel=10**12)
    trip_times: list[float] = []
    eval_times: list[float] = []
    settings: dict[str, Any] = {} if evaluation_cpus is None else {"evaluation_cpus": evaluation_cpus}
    before = os.sched_getaffinity(0)
    try:
        with Node(folder, workers=1, schedulers=1, **settings) as node:
            if evaluation_cpus is not None:
                os.sched_setaffinity(0, node.control_cpus or before)
            pid = node.spawn(wasm)
            spawn = node.reads.spawn(pid).entry
            module_id = node.process_info(pid)["module"]
            found = node.reads.module(module_id)
            if found is None:
                raise RuntimeError(f"the node has no module {module_id} for the process it spawned from it")
            env = env_of(spawn, module_id, orjson.dumps(found[0]))
            evaluator.evaluate(instance, spawn, env)
            for round_ in range(trips + WARM):
                started = time.perf_counter()
                ack = node.send(pid, {"Action": "Eval"}, CODE)
                if not node.result(ack, timeout=60).ok:
                    raise RuntimeError(f"slot {ack.slot}: the Eval failed in the node")
                trip = time.perf_counter() - started
                message = node.reads.message(ack.id, pid).entry
                stored = node.raw_results([node.result_key(ack)], timeout=60)[0]
                started = time.perf_counter()
                result, failed = evaluator.evaluate(instance, message, env)
                evaluation = time.perf_counter() - started
                if failed or result != stored:
                    raise RuntimeError(f"slot {ack.slot}: the evaluation here gave another result than the worker's")
                if round_ >= WARM:
                    trip_times.append(trip * 1000)
                    eval_times.append(evaluation * 1000)
                    if tick is not None:
                        tick(1)
    finally:  # this thread goes back where it was
        os.sched_setaffinity(0, before)
    trip_ms, eval_ms = statistics.median(trip_times), statistics.median(eval_times)
    return {"trips": trips, "trip_ms": round(trip_ms, 3), "eval_ms": round(eval_ms, 3),
            "added_ms": round(trip_ms - eval_ms, 3), "trip_p90_ms": round(_p90(trip_times), 3),
            "eval_p90_ms": round(_p90(eval_times), 3)}


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


__all__ = ["CODE", "TRIPS", "WARM", "measure"]
