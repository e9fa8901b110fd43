"""Framing, real ZeroMQ ipc sockets with high-water marks, and the nonce-ordered inbox."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq

from actorao import Overloaded
from actorao.mailbox import ASSIGN, NonceInbox, Outlet, open_socket, pack, runtime_dir, unpack, worker_address


def test_frames_round_trip_many_items() -> None:
    items = [b"", b"a", b"\x00" * 1000, "é".encode()] * 50
    kind, back = unpack(pack(ASSIGN, items))
    assert kind == ASSIGN
    assert [bytes(item) for item in back] == items


def test_a_truncated_frame_is_refused() -> None:
    frame = pack(ASSIGN, [b"abc", b"def"])
    with pytest.raises(ValueError, match="describes"):
        unpack(frame[:-1])


def test_long_data_paths_get_a_short_runtime_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    folder = runtime_dir(deep, "run-1")
    assert len(worker_address(folder, 999)) < 108
    assert folder.is_dir()


def test_ipc_batches_arrive_in_order_and_the_outlet_pushes_back_at_its_mark(tmp_path: Path) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    address = worker_address(runtime_dir(tmp_path, "run-1"), 0)
    outlet = Outlet(open_socket(context, zmq.PUSH, address, bind=True, high_water_mark=4))
    receiver = open_socket(context, zmq.PULL, address, bind=False, high_water_mark=4)
    def send_soon(item: bytes) -> bool:
        # A PUSH refuses at once while no peer is connected yet, and until the peer's reads reach it.
        for _ in range(500):
            if outlet.send_nowait(ASSIGN, [item]):
                return True
            time.sleep(0.01)
        return False

    try:
        assert send_soon(b"0")
        sent = 1
        while outlet.send_nowait(ASSIGN, [str(sent).encode()]):
            sent += 1
            assert sent < 10_000, "the high-water mark never pushed back"
        assert sent >= 4
        got = []
        while len(got) < sent:
            assert receiver.poll(5000)
            got.append(int(unpack(receiver.recv())[1][0]))
        assert got == list(range(sent))
        assert send_soon(b"again")
        assert receiver.poll(5000)
        assert unpack(receiver.recv())[1][0] == b"again"
    finally:
        outlet.close()
        receiver.close(linger=0)
        context.term()


class Log:
    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []

    def __call__(self, first: int, last: int) -> list[tuple[int, str]]:
        self.reads.append((first, last))
        return [(slot, f"log{slot}") for slot in range(first, last + 1)]


def test_inbox_delivers_in_order_and_drops_duplicates() -> None:
    log = Log()
    inbox: NonceInbox[str] = NonceInbox(0, log)
    assert inbox.offer(0, "a") == [(0, "a")]
    assert inbox.offer(1, "b") == [(1, "b")]
    assert inbox.offer(1, "b again") == []
    assert inbox.offer(0, "a again") == []
    assert log.reads == []


def test_inbox_fills_a_gap_from_the_log() -> None:
    log = Log()
    inbox: NonceInbox[str] = NonceInbox(5, log)
    assert inbox.offer(8, "live8") == [(5, "log5"), (6, "log6"), (7, "log7"), (8, "live8")]
    assert log.reads == [(5, 7)]
    assert inbox.next_slot == 9


def test_inbox_holds_what_the_log_cannot_give_yet() -> None:
    inbox: NonceInbox[str] = NonceInbox(0, lambda first, last: [])
    assert inbox.offer(2, "c") == []
    assert inbox.offer(1, "b") == []
    assert len(inbox) == 2
    assert inbox.offer(0, "a") == [(0, "a"), (1, "b"), (2, "c")]
    assert len(inbox) == 0


def test_inbox_has_a_high_water_mark() -> None:
    inbox: NonceInbox[str] = NonceInbox(0, lambda first, last: [], high_water_mark=3)
    for slot in (1, 2, 3):
        inbox.offer(slot, "x")
    with pytest.raises(Overloaded, match="high-water mark"):
        inbox.offer(4, "x")
