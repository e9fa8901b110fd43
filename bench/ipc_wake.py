"""What one hop between two OS processes costs after the receiver has been idle, on ZeroMQ's ipc
transport (as every hop of a node is) and on a bare Unix socket, side by side in one run.

A serial round trip (``bench/round_trip.py``) crosses three processes one after the other: the caller, a
shard, a worker and back. Each hop finds its receiver asleep. ZeroMQ hands a frame from the sending
thread to its context's I/O thread, which writes it to the socket; the receiver's I/O thread reads it
and wakes the receiving thread: three wake-ups a hop where a bare socket has one. On a box whose idle
cores sleep (a VM's vCPUs halt), each wake-up costs a good part of 0.1 ms, so this measures the floor a
trip's hops put under its added time.

Each round trip here is one small frame there and back (PUSH/PULL pairs, or a SOCK_SEQPACKET pair), after
``gap`` ms of sleep. Prints one JSON line per gap: the p50 and p90 of each, in ms, and their ratio. The
measurement is ``actorao/bench/_ipc.py``'s, which ``actorao bench`` also runs beside its round trip.

    python bench/ipc_wake.py [--trips 300] [--gaps 0,1,5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import orjson

from actorao.bench._ipc import measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=300)
    parser.add_argument("--gaps", default="0,1,5", help="idle gaps before each trip, in ms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for gap in (float(text) / 1000 for text in args.gaps.split(",")):
            print(orjson.dumps(measure(args.trips, gap, Path(folder))).decode(), flush=True)


if __name__ == "__main__":
    main()
