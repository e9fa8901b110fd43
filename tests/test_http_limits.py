"""The HTTP edge's bounds, tried as a hostile client would, on a real node and real sockets on
127.0.0.1: half-open requests, unfinished bodies, state reads."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from actorao import Node
from actorao.http import HttpServer

GENEROUS = 60.0  # a bound for "eventually", never a measurement


def open_socket(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=GENEROUS)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; socket.timeout if it never does."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def read_response(sock: socket.socket) -> bytes:
    """One whole response: its head, then as many body bytes as its content-length says."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection mid-response: {received[:200]!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with Node(tmp_path_factory.mktemp("limits") / "node", workers=1) as node:
        yield node


def test_half_open_requests_are_closed_by_the_server(node: Node) -> None:
    with HttpServer(node, port=0, header_timeout=0.5, body_timeout=0.5) as server:
        silent = [open_socket(server.url) for _ in range(5)]
        half_header = [open_socket(server.url) for _ in range(5)]
        half_body = [open_socket(server.url) for _ in range(5)]
        for sock in half_header:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        for sock in half_body:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        try:
            for sock in silent + half_header + half_body:
                received = read_until_closed(sock)  # raises socket.timeout if the server keeps it open
                assert received.startswith(b"HTTP/1.1 408 "), received[:200]
                assert b"did not arrive in time" in received
        finally:
            for sock in silent + half_header + half_body:
                sock.close()
        # A whole request on a fresh connection is still answered.
        with open_socket(server.url) as sock:
            sock.sendall(b"GET /timestamp HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


def test_unfinished_bodies_share_one_buffer_cap(node: Node) -> None:
    cap = 1 << 20
    with HttpServer(node, port=0, max_body=8 << 20, max_buffered_bodies=cap) as server:
        socks = [open_socket(server.url) for _ in range(4)]
        try:
            for sock in socks:  # four bodies of 8 MiB, each stopped after 600 KiB: 2.4 MiB against a 1 MiB cap
                sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (8 << 20)
                             + b"x" * (600 << 10))
            readable, _, _ = select.select(socks, [], [], GENEROUS)
            assert readable, "no request was refused: the unfinished bodies are all still buffered"
            refused = [read_response(sock) for sock in readable]
            for reply in refused:
                assert reply.startswith(b"HTTP/1.1 503 "), reply[:200]
                assert b"max_buffered_bodies" in reply and b"retry-after: 1" in reply.lower()
            # What was refused gave its bytes back: the rest fit under the cap, and a new body is read.
            assert len(refused) < len(socks)
        finally:
            for sock in socks:
                sock.close()
        with open_socket(server.url) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nxxxxx")
            assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")  # read whole, then refused as no item


def test_the_limits_are_node_settings(tmp_path: Path) -> None:
    from actorao import NodeConfig

    config = NodeConfig.from_env({"ACTORAO_HEADER_TIMEOUT": "2.5", "ACTORAO_MAX_BUFFERED_BODIES": "1000",
                                  "ACTORAO_STATE_READS": "3"}, path=tmp_path)
    assert (config.header_timeout, config.max_buffered_bodies, config.state_reads) == (2.5, 1000, 3)
    with pytest.raises(Exception, match="body_timeout"):
        NodeConfig(body_timeout=0)


def test_a_state_read_streams_the_stored_memory_and_reads_are_bounded(node: Node) -> None:
    from actorao import examples

    pid = node.spawn(examples.wasm("counter"), {"Name": "state"})
    node.result(node.send(pid, {"Action": "Inc"}).id)
    whole = node.state(pid)
    assert whole.slot == 1 and len(whole.memory) > 0
    with HttpServer(node, port=0) as server, open_socket(server.url) as sock:
        sock.sendall(f"GET /state/{pid} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        head, _, body = read_until_closed(sock).partition(b"\r\n\r\n")
        headers = dict(line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:])
        assert head.startswith(b"HTTP/1.1 200 ") and headers["content-type"] == "application/octet-stream"
        assert (headers["content-length"], headers["last-ordinate"]) == (str(len(whole.memory)), "1")
        assert body == whole.memory
    # One read at a time, at one byte a second: the first holds its place, the second is refused.
    with HttpServer(node, port=0, state_reads=1, state_bytes_per_second=1) as server:
        slow = open_socket(server.url)
        slow.sendall(f"GET /state/{pid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert slow.recv(64).startswith(b"HTTP/1.1 200 ")  # its first chunk is on its way
        with open_socket(server.url) as sock:
            sock.sendall(f"GET /state/{pid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            refused = read_response(sock)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"state_reads" in refused
        slow.close()


def test_pace_sleeps_until_the_bytes_sent_are_due() -> None:
    import asyncio

    from actorao.http._app import Pace

    now = [100.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    async def run() -> None:
        pace = Pace(1000, clock=lambda: now[0], sleep=sleep)
        await pace.sent(500)  # due at 100.5
        now[0] += 2.0  # the sender was slow by itself: nothing to wait for
        await pace.sent(1000)  # due at 101.5, and it is 102.5
        await pace.sent(2000)  # due at 103.5
    asyncio.run(run())
    assert slept == [0.5, 1.0]


def test_a_full_store_answers_507_and_keeps_nothing_of_the_write(tmp_path: Path) -> None:
    from actorao import StoreFull, ans104, examples

    signer = ans104.RsaSigner.generate()
    big = "x" * (5 << 20)  # more than the map may grow to
    with Node(tmp_path / "node", workers=1, schedulers=1, map_size=2 << 20, max_map_size=4 << 20) as node, \
            HttpServer(node, port=0) as server:
        pid = node.spawn(examples.wasm("counter"), {"Name": "full"})
        with pytest.raises(StoreFull, match="max_map_size"):
            node.send(pid, {"Action": "Inc"}, big)
        item = ans104.create_data_item(signer, big, [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"),
                                                     ("Type", "Message"), ("Action", "Inc")], target=pid)
        with open_socket(server.url) as sock:
            body = item.to_bytes()
            sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
            reply = read_response(sock)
        assert reply.startswith(b"HTTP/1.1 507 "), reply[:300]
        assert b"is full" in reply and b"nothing of this write was kept" in reply
        # Nothing half-written: the log goes on from the spawn, and the refused item is nowhere.
        ack = node.send(pid, {"Action": "Inc"})
        assert ack.slot == 1 and node.result(ack.id).output == "1"
        assert node.reads.find(item.id) is None
        assert [entry.slot for entry in node.reads.log_page(pid, None, None, 10)[0]] == [0, 1]


def test_disk_errors_from_lmdb_are_store_full() -> None:
    import errno
    import os

    import lmdb

    from actorao.persist._store import disk_full

    assert disk_full(lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EIO)}"))
    assert disk_full(lmdb.DiskError(f"mdb_put: {os.strerror(errno.ENOSPC)}"))
    assert not disk_full(lmdb.BadValsizeError("mdb_put: MDB_BAD_VALSIZE: Unsupported size of key/DB pointer/data"))


class CountingReads:
    """The node's read facade, counting the spawn messages read: how much a query scanned."""

    def __init__(self, reads: object) -> None:
        self.reads, self.spawns = reads, 0

    def spawn(self, pid: str) -> object:
        self.spawns += 1
        return self.reads.spawn(pid)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.reads, name)


def test_tag_and_owner_filters_read_what_they_match_not_every_process(node: Node) -> None:
    import orjson

    from actorao import examples
    from actorao.http._gateway import MAX_SCAN, Gateway

    module = node.add_module(examples.wasm("echo"))
    pids = [node.spawn(module, {"Name": f"indexed-{index}", "Kind": "indexed"}) for index in range(12)]
    gateway = Gateway(node, lambda: "http://127.0.0.1:1")
    counting = CountingReads(node.reads)
    gateway.reads = counting  # type: ignore[assignment]

    def ask(query: str, variables: dict[str, object] | None = None) -> dict[str, object]:
        return gateway.execute(orjson.dumps({"query": query, "variables": variables or {}}))

    # aos's lookup of its process by name and owner
    found = ask('query ($owners: [String!]!) { transactions(first: 10, owners: $owners, tags: ['
                '{name: "Data-Protocol", values: ["ao"]}, {name: "Type", values: ["Process"]}, '
                '{name: "Name", values: ["indexed-7"]}]) { edges { node { id } } } }', {"owners": [node.identity]})
    assert [edge["node"]["id"] for edge in found["data"]["transactions"]["edges"]] == [pids[7]]  # type: ignore[index]
    assert counting.spawns == 1
    both = ask('{ transactions(tags: [{name: "Kind", values: ["indexed"]}, {name: "Name", values: ["indexed-1", '
               '"indexed-2", "nobody"]}]) { edges { node { id } } } }')
    assert sorted(e["node"]["id"] for e in both["data"]["transactions"]["edges"]) == sorted(pids[1:3])  # type: ignore[index]
    assert counting.spawns == 3
    # aoconnect's Scheduler-Location by owner reads no process at all
    location = ask('query ($owner: String!) { transactions(owners: [$owner], tags: [{name: "Data-Protocol", '
                   'values: ["ao"]}, {name: "Type", values: ["Scheduler-Location"]}], sort: HEIGHT_DESC, first: 1) '
                   '{ edges { node { tags { name value } } } } }', {"owner": node.identity})
    assert len(location["data"]["transactions"]["edges"]) == 1 and counting.spawns == 3  # type: ignore[index]
    assert MAX_SCAN >= 12


def test_a_store_written_before_the_index_is_indexed_when_the_node_opens(tmp_path: Path) -> None:
    import orjson

    from actorao import examples
    from actorao.http._gateway import Gateway
    from actorao.persist import Store

    with Node(tmp_path / "node", workers=1, schedulers=1) as node:
        pid = node.spawn(examples.wasm("echo"), {"Name": "from-before"})
    store = Store(tmp_path / "node")  # as a store written before the index existed: none of it
    store.write(lambda txn: (txn.drop(store.db["tagged"], delete=False), txn.delete(b"tagged-index", db=store.meta)))
    assert store.tagged(b"p", "Name", "from-before", 10) == []
    store.close()
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:
        query = '{ transactions(tags: [{name: "Name", values: ["from-before"]}]) { edges { node { id } } } }'
        found = Gateway(node, lambda: "").execute(orjson.dumps({"query": query}))
        assert [edge["node"]["id"] for edge in found["data"]["transactions"]["edges"]] == [pid]
