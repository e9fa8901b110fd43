"""The ``actorao`` command."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import orjson

from actorao import examples
from actorao.node import Node


def demo(path: str, processes: int, messages: int, workers: int | None, batch: int) -> int:
    """Spawn counters, send them messages in durable batches, wait for every result, check every count."""
    started = time.perf_counter()
    with Node(path, workers=workers) as node:
        earlier = len(node.processes())
        print(f"node at {path}: {node.workers} workers, {earlier} processes already there, "
              f"up in {time.perf_counter() - started:.2f} s")
        pids = [node.spawn(examples.wasm("counter"), {"Name": f"counter-{i}"}) for i in range(processes)]
        print(f"spawned {processes} counter processes")
        sent = dict.fromkeys(pids, 0)
        acks = []
        t0 = time.perf_counter()
        for start in range(0, messages, batch):
            chunk = [(pids[i % processes], {"Action": "Inc"}, "") for i in range(start, min(start + batch, messages))]
            acks += node.send_many(chunk)
            for pid, _, _ in chunk:
                sent[pid] += 1
            rate = len(acks) / (time.perf_counter() - t0)
            print(f"\r  acknowledged {len(acks):>7}/{messages}  {rate:>9,.0f} durable msgs/s", end="", flush=True)
        results = node.results(acks, timeout=300)
        elapsed = time.perf_counter() - t0
        print(f"\nall {messages} results in {elapsed:.2f} s: {messages / elapsed:,.0f} msgs/s from send to result")
        failed = [result.error for result in results if not result.ok]
        wrong = [pid for pid in pids if node.dry_run(pid, {"Action": "Get"}).output != str(sent[pid])]
    if failed or wrong:
        print(f"FAILED: {len(failed)} error results, {len(wrong)} counters off, e.g. {(failed or wrong)[0]}")
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
    show_tree = commands.add_parser("tree", help="open a node and print its supervision tree as JSON")
    show_tree.add_argument("--path", default=".actorao", help="the node's data folder (default: ./.actorao)")
    show_tree.add_argument("--workers", type=int, default=None, help="CU workers (default: one per core)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.command == "demo":
        return demo(args.path, args.processes, args.messages, args.workers, args.batch)
    if args.command == "tree":
        with Node(args.path, workers=args.workers) as node:
            print(orjson.dumps(node.tree(), option=orjson.OPT_INDENT_2).decode())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
