"""The worker sockets on TCP with CURVE (mailbox/_transport.py): a node on TCP computes what a node
on ipc does, survives a worker's and a shard's kill -9, and a stranger at any of its ports (with no
key, or a key of its own) fails the handshake, so it gets no frame and none of its frames is read."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from actorao import InvalidMessage, Node, NodeConfig
from actorao.mailbox import KEY_FILE, RESULTS, ClusterKey, pack
from tests.streams import each_inc_once, eventually, incs

_HANDSHAKES = {zmq.EVENT_HANDSHAKE_SUCCEEDED: "succeeded", zmq.EVENT_HANDSHAKE_FAILED_AUTH: "failed",
               zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "failed", zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed"}


def _run(node: Node, pids: list[str], rounds: int) -> list[str]:
    acks = node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids] * rounds)
    return [result.output for result in node.results(acks, timeout=120)]


def test_a_node_on_tcp_computes_what_a_node_on_ipc_does(tmp_path: Path, counter: bytes) -> None:
    outputs: dict[str, list[str]] = {}
    for transport in ("ipc", "tcp"):
        with Node(tmp_path / transport, workers=2, schedulers=2, transport=transport) as node:
            pids = [node.spawn(counter) for _ in range(6)]
            outputs[transport] = _run(node, pids, 50)
            # A replay of each log in a fresh instance gives the results and the memory its worker has.
            assert all(node.verify(pid).ok for pid in pids)
            digests = [node.state_digest(pid) for pid in pids]
    assert outputs["tcp"] == outputs["ipc"] == [str(n) for n in range(1, 51) for _ in range(6)]
    # The same data path, opened again on ipc: the same states, and the log goes on.
    with Node(tmp_path / "tcp", workers=2, schedulers=2, transport="ipc") as node:
        assert [node.state_digest(pid) for pid in pids] == digests
        assert _run(node, pids, 1) == ["51"] * 6
    key = tmp_path / "tcp" / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600  # the secret is the owner's only
    assert not (tmp_path / "ipc" / KEY_FILE).exists()


def test_a_node_reopened_on_tcp_keeps_its_cluster_key(tmp_path: Path, counter: bytes) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=1, transport="tcp") as node:
        pid = node.spawn(counter)
        assert _run(node, [pid], 3) == ["1", "2", "3"]
    first = ClusterKey.load(tmp_path / "node" / KEY_FILE)
    with Node(tmp_path / "node", workers=1, schedulers=1, transport="tcp") as node:
        assert _run(node, [pid], 1) == ["4"]
    assert ClusterKey.load(tmp_path / "node" / KEY_FILE) == first


@pytest.mark.parametrize("victim", ["worker-1", "su-1"])
def test_kill_9_on_tcp_mid_stream_loses_and_repeats_nothing(tmp_path: Path, counter: bytes, victim: str) -> None:
    """A restarted worker binds its feed on a new port, and a restarted shard knows no feed yet: the
    node tells the shards, and every process of that worker catches up from the log."""
    with Node(tmp_path / "node", workers=2, schedulers=2, transport="tcp") as node:
        pids = [node.spawn(counter, {"Scheduler": node.schedulers[i % 2]}) for i in range(8)]
        children = node.worker_processes() + node.scheduler_processes()
        with incs(node, pids, warm=400) as acked:
            [dead] = [child for child in children if child["id"] == victim]
            feeds_before = dict(node._pool.feed_addresses)
            os.kill(dead["pid"], signal.SIGKILL)
            before = len(acked)
            assert eventually(lambda: len(acked) >= before + 800)  # the stream goes on
        [child] = [c for c in node.worker_processes() + node.scheduler_processes() if c["id"] == victim]
        assert child["pid"] != dead["pid"] and child["restarts"] == 1
        if victim.startswith("worker"):
            # A new feed (at times on the same port) of the new pid, which the shards are told.
            assert eventually(lambda: node._pool.feed_addresses[1][1] == child["pid"]), feeds_before
        each_inc_once(node, pids, acked)


def test_scaling_on_tcp_with_work_in_flight_loses_and_repeats_nothing(tmp_path: Path, counter: bytes) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=1, transport="tcp") as node:
        pids = [node.spawn(counter) for _ in range(12)]
        acks = node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids] * 5)
        node.scale(3)
        acks += node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids] * 5)
        assert len(node._pool.feed_addresses) == 3
        node.scale(1)
        acks += node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids] * 5)
        outputs = [result.output for result in node.results(acks, timeout=120)]
        assert outputs == [str(n) for n in range(1, 16) for _ in pids]
        assert all(node.verify(pid).ok for pid in pids)


# -- strangers ------------------------------------------------------------------------------------
def _handshake(socket: zmq.Socket[bytes], address: str) -> str:
    """Connect ``socket`` to ``address`` and wait for its first handshake's outcome."""
    monitor = socket.get_monitor_socket()
    try:
        socket.connect(address)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if monitor.poll(1000):
                outcome = _HANDSHAKES.get(recv_monitor_message(monitor)["event"])
                if outcome is not None:
                    return outcome
        return "no handshake within 60 s"
    finally:
        socket.disable_monitor()
        monitor.close()


def _socket(context: zmq.Context[zmq.Socket[bytes]], kind: int, key: ClusterKey | None, server: bytes) -> Any:
    socket = context.socket(kind)
    socket.setsockopt(zmq.LINGER, 0)
    if key is not None:
        socket.curve_serverkey = server
        socket.curve_publickey = key.public
        socket.curve_secretkey = key.secret
    return socket


@pytest.fixture
def tcp_node(tmp_path: Path) -> Iterator[Node]:
    with Node(NodeConfig(path=tmp_path / "node", workers=1, schedulers=1, transport="tcp")) as node:
        yield node


@pytest.mark.parametrize("stranger", ["no key", "a key of its own"])
def test_a_stranger_at_any_port_gets_no_frame_and_none_of_its_frames_is_read(
    tcp_node: Node, counter: bytes, stranger: str
) -> None:
    node = tcp_node
    cluster = ClusterKey.load(node.path / KEY_FILE)
    public, secret = zmq.curve_keypair()
    key = None if stranger == "no key" else ClusterKey(public, secret)
    pid = node.spawn(counter)
    forged: list[bytes] = []
    stop_watching = node.watch_results(lambda items, _: forged.extend(
        bytes(items[at]) for at in range(0, len(items), 2) if bytes(items[at + 1]).startswith(b'{"forged"')))
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        # The node's PUSH to its worker (a stranger would take frames), its results PULL and the
        # worker's feed (a stranger would forge results and assignments).
        taker = _socket(context, zmq.PULL, key, cluster.public)
        forger = _socket(context, zmq.PUSH, key, cluster.public)
        feeder = _socket(context, zmq.PUSH, key, cluster.public)
        assert _handshake(taker, node._pool.inbox_addresses[0]) == "failed"
        assert _handshake(forger, node._pool.results_address) == "failed"
        assert _handshake(feeder, node._pool.feed_addresses[0][0]) == "failed"
        forgery = orjson.dumps({"forged": True, "Output": "999"})
        first = node.send(pid, {"Action": "Inc"})
        key_of_next = node.result_key(first)
        for socket in (forger, feeder):
            try:  # no peer is ever attached, so this queues at most, and never leaves this process
                socket.send(pack(RESULTS, [key_of_next, forgery]), zmq.NOBLOCK)
            except zmq.Again:
                pass
        assert _run(node, [pid], 3) == ["2", "3", "4"]
        assert node.result(first, timeout=60).output == "1"
        assert taker.poll(0) == 0  # the node's frames all went to its worker
        # A member, with the cluster key, does complete the handshake at the same port.
        member = _socket(context, zmq.PUSH, cluster, cluster.public)
        assert _handshake(member, node._pool.results_address) == "succeeded"
        assert forged == []
    finally:
        stop_watching()
        context.destroy(linger=0)


def test_bad_transport_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidMessage, match="transport"):
        NodeConfig(path=tmp_path, transport="udp")
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / KEY_FILE).write_text("not a key")
    with pytest.raises(InvalidMessage, match=r"cluster\.key is not a cluster key"):
        Node(tmp_path / "node", workers=1, schedulers=1, transport="tcp")
    public, _ = zmq.curve_keypair()
    _, other = zmq.curve_keypair()
    (tmp_path / "node" / KEY_FILE).write_bytes(orjson.dumps({"public": public.decode(), "secret": other.decode()}))
    with pytest.raises(InvalidMessage, match="not the one of its secret key"):
        Node(tmp_path / "node", workers=1, schedulers=1, transport="tcp")
