"""Load alone must never stop a node: issue 16's target is 0 false hang-kills with 16 workers on a
2-core box and 10,000 spawns.

Spawns ``--spawns`` counter processes from a few threads, sends each one Inc, and waits for every
result. Counts what the supervisors said meanwhile: children killed as hung, children found silent
but busy, and worker restarts.

    python -m bench.busy_not_hung [--workers 16] [--spawns 10000] [--threads 8]   # prints one JSON line
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from actorao import Node, examples
from actorao.cu import worker_entries


class _Tally(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        with self._lock:
            if "killing it as hung" in text:
                self.counts["hang_kills"] += 1
            elif "silent but busy" in text:
                self.counts["busy_verdicts"] += 1
            elif "reached its maximum restart intensity" in text or "restarts in" in text:
                self.counts["gave_up"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--spawns", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8, help="threads spawning at once")
    args = parser.parse_args()
    tally = _Tally()
    supervision = logging.getLogger("actorao.supervisor")
    supervision.addHandler(tally)
    supervision.setLevel(logging.INFO)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, Node(Path(folder) / "node", workers=args.workers) as node:
        module = examples.wasm("counter")

        def spawn_and_send(_: int) -> str:
            pid = node.spawn(module, timeout=600)
            return node.send(pid, {"Action": "Inc"}, timeout=600).id

        with ThreadPoolExecutor(args.threads) as pool:
            acks = list(pool.map(spawn_and_send, range(args.spawns)))
        results = node.results(acks, timeout=1800)
        restarts = sum(entry["restarts"] for entry in worker_entries(node.tree()))
        ok = sum(result.ok for result in results)
        seconds = time.perf_counter() - started
    print(orjson.dumps({
        "workers": args.workers,
        "spawns": args.spawns,
        "results_ok": ok,
        "seconds": round(seconds, 1),
        "hang_kills": tally.counts["hang_kills"],
        "busy_verdicts": tally.counts["busy_verdicts"],
        "worker_restarts": restarts,
        "gave_up": tally.counts["gave_up"],
    }).decode())


if __name__ == "__main__":
    main()
