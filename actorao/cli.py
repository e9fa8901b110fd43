"""The ``actorao`` command."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from actorao import examples
from actorao.node import Node


def demo(path: str, processes: int, messages: int, workers: int | None, batch: int) -> int:
    """Spawn counters, send them messages in batches, and check every count."""
    started = time.perf_counter()
    with Node(path, workers=workers) as node:
        print(f"node at {path} with {node.workers} workers, up in {time.perf_counter() - started:.2f} s")
        pids = [node.spawn(examples.wasm("counter"), {"Name": f"counter-{i}"}) for i in range(processes)]
        before = {pid: int(node.dry_run(pid, {"Action": "Get"}).output) for pid in pids}
        print(f"spawned {processes} counter processes")
        sent = {pid: 0 for pid in pids}
        t0 = time.perf_counter()
        last_acks = []
        for start in range(0, messages, batch):
            chunk = [(pids[i % processes], {"Action": "Inc"}, "") for i in range(start, min(start + batch, messages))]
            acks = node.send_many(chunk)
            last_acks = acks
            for pid, _, _ in chunk:
                sent[pid] += 1
            done = start + len(chunk)
            rate = done / (time.perf_counter() - t0)
            print(f"\r  sent {done:>7}/{messages}  {rate:>9,.0f} durable msgs/s", end="", flush=True)
        node.results(last_acks, timeout=120)
        # every message before the last batch was evaluated too: slots are evaluated in order
        for pid in pids:
            node.send(pid, {"Action": "Get"})
        elapsed = time.perf_counter() - t0
        print(f"\nall {messages} results in {elapsed:.2f} s: {messages / elapsed:,.0f} msgs/s end to end")
        wrong = [
            pid for pid in pids if int(node.dry_run(pid, {"Action": "Get"}).output) != before[pid] + sent[pid]
        ]
    if wrong:
        print(f"FAILED: {len(wrong)} counters do not hold what they were sent, e.g. {wrong[0]}")
        return 1
    print(f"check: every one of the {processes} counters holds exactly what it was sent")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actorao", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="run the counter demo workload on a node")
    run_demo.add_argument("--path", default=".actorao", help="the node's data folder (default: ./.actorao)")
    run_demo.add_argument("--processes", type=int, default=100)
    run_demo.add_argument("--messages", type=int, default=20_000)
    run_demo.add_argument("--workers", type=int, default=None, help="CU workers (default: one per core)")
    run_demo.add_argument("--batch", type=int, default=1000, help="messages per send_many")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.command == "demo":
        return demo(args.path, args.processes, args.messages, args.workers, args.batch)
    return 2


if __name__ == "__main__":
    sys.exit(main())
