"""The busiest OS process's CPU per ``noop`` message, for this checkout and a baseline one, interleaved:
each round runs every side once, each in a fresh interpreter of its own checkout, so both see the same
box. Prints one JSON line per run, then each side's median and each round's ratio baseline / this.

Issue 11 asks for the busiest process's CPU per noop message to be 4 times lower than on 13af94f's design,
where the node process did the serial work of every message. The stream is the bench's shape: 100
``noop`` processes, 2 workers (``--workers``, on both sides), batches of 1,000 with 4 in flight, every
result awaited. It runs on 13af94f's API (``Node(path, workers=...)``) and on today's (``NodeConfig``),
where ``--schedulers`` sets this checkout's scheduler shards (13af94f has none: its node process schedules).

    python bench/busiest.py [--baseline CHECKOUT] [--rounds 3] [--messages 40000] [--workers 2] [--schedulers S]

A checkout's interpreter is its .venv/bin/python.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent.parent
PROCESSES = 100
BATCH = 1000
WINDOW = 4


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> list[int]:
    """This process's child processes: the node's workers and shards."""
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[1] == me:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _open_node(path: Path, workers: int, schedulers: int | None) -> Any:
    import actorao

    if hasattr(actorao, "NodeConfig"):
        return actorao.Node(actorao.NodeConfig(path=path, workers=workers, schedulers=schedulers))
    return actorao.Node(path, workers=workers)  # 13af94f


def measure(messages: int, workers: int = 2, schedulers: int | None = None) -> dict[str, Any]:
    """Each OS process's CPU µs per message over a stream of ``messages``, in this interpreter's actorao."""
    from actorao import examples

    with tempfile.TemporaryDirectory() as folder, _open_node(Path(folder) / "node", workers, schedulers) as node:
        pids = [node.spawn(examples.wasm("noop")) for _ in range(PROCESSES)]
        node.results(node.send_many([(pid, {"Action": "x"}, "") for pid in pids]), timeout=120)
        children = _children()
        before = {pid: _cpu_seconds(pid) for pid in children}
        caller_before, started = time.process_time(), time.perf_counter()
        acks: list[Any] = []
        in_flight: collections.deque[Any] = collections.deque()
        for first in range(0, messages, BATCH):
            batch = [(pids[i % PROCESSES], {"Action": "x"}, "") for i in range(first, min(first + BATCH, messages))]
            in_flight.append(node.send_many_nowait(batch))
            if len(in_flight) >= WINDOW:
                acks.extend(in_flight.popleft().get(timeout=300))
        while in_flight:
            acks.extend(in_flight.popleft().get(timeout=300))
        node.results(acks, timeout=300)
        wall = time.perf_counter() - started
        per = {"caller": (time.process_time() - caller_before) / messages * 1e6}
        per |= {str(pid): (_cpu_seconds(pid) - before[pid]) / messages * 1e6 for pid in children}
    busiest = max(per, key=per.__getitem__)
    return {"msgs_s": round(messages / wall), "busiest_us": round(per[busiest], 1),
            "busiest": "caller" if busiest == "caller" else "a child", "per": {k: round(v, 1) for k, v in per.items()}}


def _run(checkout: Path, messages: int, workers: int, schedulers: int | None) -> dict[str, Any]:
    # Run as a file from the checkout's folder: its interpreter imports its own actorao.
    shards = ["--schedulers", str(schedulers)] if schedulers else []
    out = subprocess.run([str(checkout / ".venv" / "bin" / "python"), str(Path(__file__).resolve()), "--one",
                          "--messages", str(messages), "--workers", str(workers), *shards],
                         cwd=checkout, check=True, capture_output=True, text=True).stdout
    found: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout, with its own .venv")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=2, help="workers of each side's node")
    parser.add_argument("--schedulers", type=int, help="scheduler shards of this checkout's node (default: its own)")
    parser.add_argument("--one", action="store_true", help="measure once here, print one JSON line")
    args = parser.parse_args()
    if args.one:
        print(orjson.dumps(measure(args.messages, args.workers, args.schedulers)).decode(), flush=True)
        return 0
    sides = {"this": HERE} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    busiest: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(args.rounds):
        for name, checkout in (sides.items() if round_ % 2 == 0 else reversed(sides.items())):
            run = _run(checkout, args.messages, args.workers, args.schedulers if name == "this" else None)
            busiest[name].append(run["busiest_us"])
            print(orjson.dumps({"round": round_, "side": name, **run}).decode(), flush=True)
    summary: dict[str, Any] = {"busiest_us_median": {name: statistics.median(found) for name, found in busiest.items()}}
    if "baseline" in busiest:  # each round's ratio: both sides of a round saw the same box
        ratios = [round(theirs / ours, 2) for theirs, ours in zip(busiest["baseline"], busiest["this"], strict=True)]
        summary |= {"baseline_over_this": ratios, "median_ratio": statistics.median(ratios)}
    print(orjson.dumps(summary).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
