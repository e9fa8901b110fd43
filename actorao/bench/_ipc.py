"""What one hop between two OS processes costs after the receiver has been idle, on ZeroMQ's ipc
transport (as every hop of a node is) and on a bare Unix socket, side by side: the floor the hops of a
serial round trip put under what the node adds to an evaluation.

A serial round trip crosses three processes one after the other: the caller, a shard, a worker and back.
Each hop finds its receiver asleep. ZeroMQ hands a frame from the sending thread to its context's I/O
thread, which writes it to the socket; the receiver's I/O thread reads it and wakes the receiving thread:
three wake-ups a hop where a bare socket has one. Each round trip here is one small frame there and back
(PUSH/PULL pairs, or a SOCK_SEQPACKET pair), after ``gap`` seconds of sleep; the echo is a process of its
own, started fresh (spawned, not forked: the bench's process has threads).
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import zmq

from actorao.bench._round_trip import _p90

_WARM = 20  # trips that are not counted: both sides' first ones
_PATIENCE = 30.0  # s to wait for the echo to start, or to answer: one that died ends the measurement, not the run


def _echo_socket(path: str) -> None:
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    peer.connect(path)
    while (frame := peer.recv(64)) != b"stop":
        peer.send(frame)
    peer.close()


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
            raise RuntimeError("the echo answered something else")
        took.append((time.perf_counter() - started) * 1000)
    return took


def measure(trips: int, gap: float, folder: Path) -> dict[str, float]:
    """p50 and p90, in ms, of ``trips`` round trips, each after ``gap`` seconds of idleness, on both
    transports, and the ratio of their p50s. ``folder`` holds the sockets' paths while it runs."""
    spawn = multiprocessing.get_context("spawn")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(folder / "echo.sock"))
    listener.listen(1)
    listener.settimeout(_PATIENCE)
    echo = spawn.Process(target=_echo_socket, args=(str(folder / "echo.sock"),), daemon=True)
    echo.start()
    try:
        mine, _ = listener.accept()
    finally:
        listener.close()
    mine.settimeout(_PATIENCE)
    try:
        _trips(mine.send, lambda: mine.recv(64), _WARM, 0)
        bare = _trips(mine.send, lambda: mine.recv(64), trips, gap)
        mine.send(b"stop")
    finally:
        mine.close()
        echo.join(10)

    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVTIMEO, int(_PATIENCE * 1000))
    try:
        there, back = f"ipc://{folder}/there", f"ipc://{folder}/back"
        push.bind(there)
        pull.bind(back)
        echo = spawn.Process(target=_echo_zmq, args=(there, back), daemon=True)
        echo.start()
        _trips(push.send, pull.recv, _WARM, 0)
        zero_mq = _trips(push.send, pull.recv, trips, gap)
        push.send(b"stop")
        echo.join(10)
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        context.term()

    return {"gap_ms": gap * 1000, "unix_p50": round(statistics.median(bare), 3), "unix_p90": round(_p90(bare), 3),
            "zmq_p50": round(statistics.median(zero_mq), 3), "zmq_p90": round(_p90(zero_mq), 3),
            "zmq_over_unix": round(statistics.median(zero_mq) / statistics.median(bare), 2)}
