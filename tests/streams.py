"""What the fault tests of several rooms share: waiting on a condition, a stream of Incs that goes on
while a test breaks something, and the check that every acknowledged Inc was evaluated exactly once."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from actorao import Node, Overloaded, Timeout
from actorao.node import Ack


def eventually(condition: Callable[[], bool], seconds: float = 120.0) -> bool:
    """Whether ``condition`` holds within ``seconds``: true as soon as it does."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@contextmanager
def incs(node: Node, pids: list[str], warm: int, copies: int = 5, window: int | None = None) -> Iterator[list[Ack]]:
    """Send Incs to ``pids`` from a thread until the block ends, ``copies`` to each a batch; yields the
    Acks so far once ``warm`` are in. A batch refused (a shard restarting, a process being re-hosted)
    was never acknowledged: skipped. With ``window``, at most that many batches are acknowledged and
    not yet evaluated: on a busy box the acknowledgements can run far ahead of the evaluations (once
    by 500,000 messages, more than the test then waited for), so this bounds the work left at the end."""
    acked: list[Ack] = []
    enough = threading.Event()
    stop = threading.Event()

    def stream() -> None:
        open_batches: collections.deque[list[Ack]] = collections.deque()
        while not stop.is_set():
            if window is not None and len(open_batches) >= window:
                try:
                    node.results(open_batches[0], timeout=1)
                except Timeout:
                    continue  # evaluations are behind (a worker restarting, say): look at ``stop`` again
                open_batches.popleft()
                continue
            try:
                batch = node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids] * copies, timeout=60)
            except Overloaded:
                continue
            acked.extend(batch)
            if window is not None:
                open_batches.append(batch)
            if len(acked) >= warm:
                enough.set()

    sender = threading.Thread(target=stream, name="incs")
    sender.start()
    try:
        assert enough.wait(120), f"{len(acked)} of {warm} Incs acknowledged in 120 s"
        yield acked
    finally:
        stop.set()
        sender.join(120)


def each_inc_once(node: Node, pids: list[str], acked: list[Ack]) -> None:
    """Each acknowledged Inc's result is its process's count at its slot: no slot given twice, none
    lost and none evaluated twice; and each process replays from its log to the same memory."""
    results = node.results(acked, timeout=120)
    for pid in pids:
        mine = sorted((ack.slot, result.output) for ack, result in zip(acked, results, strict=True)
                      if ack.process == pid)
        slots = [slot for slot, _ in mine]
        assert len(slots) == len(set(slots)), f"a slot of {pid} was given twice"
        wrong = [(slot, output) for slot, output in mine if output != str(slot)]
        assert not wrong, f"{pid}: results whose count is not their slot (slot, output): {wrong[:20]}"
        assert node.verify(pid).ok
