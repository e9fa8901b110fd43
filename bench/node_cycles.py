"""Open and close a Node many times in one Python process, and count what is left behind: open file
descriptors (/proc/self/fd) and threads (threading.enumerate()), before and after, with and without a
garbage collection first. Issue 16's target: 1,000 cycles, 0 leaked fds or threads.

    python -m bench.node_cycles [CYCLES] [PATH]    # prints one JSON line per 100 cycles, then the total
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

from actorao import Node


def counts(collect: bool) -> dict[str, int]:
    if collect:
        gc.collect()
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": len(threading.enumerate())}


def main(cycles: int, path: Path) -> int:
    with Node(path, workers=1, schedulers=1):  # the first opens import and cache what later ones reuse
        pass
    before, before_gc = counts(False), counts(True)
    started = time.monotonic()
    for cycle in range(1, cycles + 1):
        with Node(path, workers=1, schedulers=1):
            pass
        if cycle % 100 == 0:
            seconds = round(time.monotonic() - started)
            print(orjson.dumps({"cycle": cycle, **counts(False), "seconds": seconds}).decode(), flush=True)
    after, after_gc = counts(False), counts(True)
    leaked = {name: after_gc[name] - before_gc[name] for name in before_gc}
    print(orjson.dumps({"cycles": cycles, "before": before, "after": after, "before_gc": before_gc,
                        "after_gc": after_gc, "leaked": leaked,
                        "threads_left": sorted(t.name for t in threading.enumerate())}).decode(), flush=True)
    return 0 if all(value <= 0 for value in leaked.values()) else 1


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as folder:
        sys.exit(main(count, Path(sys.argv[2]) if len(sys.argv) > 2 else Path(folder) / "node"))
