"""What one hop between two OS processes costs after the receiver has been idle, on ZeroMQ's ipc
transport (as every hop of a node is) and on a bare Unix socket, side by side in one run.

A serial round trip (``bench/round_trip.py``) crosses three processes one after the other: the caller, a
shard, a worker and back. Each hop finds its receiver asleep. ZeroMQ hands a frame from the sending
thread to its context's I/O thread, which writes it to the socket; the receiver's I/O thread reads it
and wakes the receiving thread: three wake-ups a hop where a bare socket has one. On a box whose idle
cores sleep (a VM's vCPUs halt), each wake-up costs a good part of 0.1 ms, so this measures the floor a
trip's hops put under its added time.

Each round trip here is one small frame there and back (PUSH/PULL pairs, or a SOCK_SEQPACKET pair), after
``gap`` ms of sleep. Prints one JSON line per gap: the p50 and p90 of each, in ms, and their ratio.

    python bench/ipc_wake.py [--trips 300] [--gaps 0,1,5]
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import zmq


def _echo_socket(peer: socket.socket) -> None:
    while (frame := peer.recv(64)) != b"stop":
        peer.send(frame)


def _echo_zmq(inbound: str, outbound: str) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull, push = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    pull.connect(inbound)
    push.connect(outbound)
    while (frame := pull.recv()) != b"stop":
        push.send(frame)
    pull.close(linger=0)
    push.close(linger=1000)
    context.term()


def _trips(send: Callable[[bytes], object], receive: Callable[[], bytes], trips: int, gap: float) -> list[float]:
    took = []
    for _ in range(trips):
        time.sleep(gap)
        started = time.perf_counter()
        send(b"ping")
        if receive() != b"ping":
            raise SystemExit("the echo answered something else")
        took.append((time.perf_counter() - started) * 1000)
    return took


def measure(trips: int, gap: float, folder: Path) -> dict[str, float]:
    """p50 and p90 of ``trips`` round trips, each after ``gap`` seconds of idleness, on both transports."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    echo = multiprocessing.Process(target=_echo_socket, args=(theirs,))
    echo.start()
    _trips(mine.send, lambda: mine.recv(64), 20, 0)  # both sides warm
    bare = _trips(mine.send, lambda: mine.recv(64), trips, gap)
    mine.send(b"stop")
    echo.join()

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    there, back = f"ipc://{folder}/there", f"ipc://{folder}/back"
    push.bind(there)
    pull.bind(back)
    echo = multiprocessing.Process(target=_echo_zmq, args=(there, back))
    echo.start()
    _trips(push.send, pull.recv, 20, 0)
    zero_mq = _trips(push.send, pull.recv, trips, gap)
    push.send(b"stop")
    echo.join()
    push.close(linger=0)
    pull.close(linger=0)
    context.term()

    def p(values: list[float], q: int) -> float:
        return round(statistics.quantiles(values, n=10)[q - 1], 3)

    return {"gap_ms": gap * 1000, "unix_p50": round(statistics.median(bare), 3), "unix_p90": p(bare, 9),
            "zmq_p50": round(statistics.median(zero_mq), 3), "zmq_p90": p(zero_mq, 9),
            "zmq_over_unix": round(statistics.median(zero_mq) / statistics.median(bare), 2)}


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
