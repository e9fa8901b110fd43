"""A remote worker's view of the node's data (cu/_remote.py, cu/_service.py): the node's data service
on real TCP with CURVE, read by the client a Ray-placed worker uses, and the checkpoints it ships
back. Ray itself is in test_ray.py; here the node's workers are local, and the test is the remote side."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
import zmq

from actorao import Node, NodeConfig
from actorao.cu import Limits
from actorao.cu import _checkpoint as checkpoints
from actorao.cu._ahead import RemoteAheadLogs
from actorao.cu._remote import RemoteError, RemoteLogs, RemoteStore, ServiceClient, Shipper
from actorao.cu._service import SHIP, DataService
from actorao.cu._worker import Worker, WorkerConfig
from actorao.mailbox import ClusterKey, Guard
from actorao.persist import ShardLogs, Store, log_key, split_key
from tests.streams import eventually
from tests.test_cu import feed, no_compute_time, populate


@pytest.fixture
def served(tmp_path: Path, counter: bytes) -> Iterator[tuple[Node, DataService, ServiceClient, str]]:
    """A node with one process (27 messages; a checkpoint every 5 and a full one every 2 deltas),
    its data service, and a member's client."""
    config = NodeConfig(path=tmp_path / "node", workers=1, schedulers=2, checkpoint_every=5, checkpoint_ms=1e9,
                        checkpoint_full_every=2)
    key = ClusterKey.load(tmp_path / "cluster.key")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    guard = Guard(context, key)
    with Node(config) as node:
        pid = node.spawn(counter, {"Scheduler": node.schedulers[1]})  # its log is in a shard's own store
        node.results(node.send_many([(pid, {"Action": "Inc"}, "")] * 27))
        service = DataService(context, "tcp://127.0.0.1:0", key, node._store, node._logs)
        client = ServiceClient(service.address, key)
        try:
            yield node, service, client, pid
        finally:
            client.close()
            service.stop()
            guard.stop()
            context.term()


def test_a_remote_worker_reads_the_log_results_and_modules_the_node_holds(
    served: tuple[Node, DataService, ServiceClient, str], tmp_path: Path
) -> None:
    node, _, client, pid = served
    logs = RemoteLogs(client)
    assert logs.last_slot(pid) == node._logs.last_slot(pid) == 27
    assert logs.log_range(pid, 0, 27) == node._logs.log_range(pid, 0, 27)
    assert logs.log_range(pid, 5, 4) == []
    assert logs.log_entry(pid, 3) == node._logs.log_entry(pid, 3)
    assert logs.log_entry(pid, 99) is None
    assert logs.process_record(pid) == node._logs.process_record(pid)
    assert logs.process_record("x" * 43) is None
    own = RemoteStore(tmp_path / "own", client)
    try:
        assert own.last_slot("results", pid) == 27
        assert own.slot_range("results", pid, 20, 27) == node._store.slot_range("results", pid, 20, 27)
        module = module_of(node, pid)
        assert own.module_meta(module) == node._store.module_meta(module)
        assert own.module_wasm(module) == node._store.module_wasm(module)
        # Its own results count too: one the node has not stored yet is not evaluated again.
        own.computed.write(lambda txn: own.put_results(txn, [(log_key(pid, 28), b'{"Output":"28"}')]))
        assert own.last_slot("results", pid) == 28
        assert own.slot_range("results", pid, 27, 28)[-1] == (28, b'{"Output":"28"}')
    finally:
        own.close()


def module_of(node: Node, pid: str) -> str:
    record = node._logs.process_record(pid)
    assert record is not None
    return str(orjson.loads(record)["module"])


def test_a_remote_worker_takes_the_nodes_newer_chain_and_keeps_it_on_its_disk(
    served: tuple[Node, DataService, ServiceClient, str], tmp_path: Path
) -> None:
    node, service, client, pid = served
    node.state(pid)  # a checkpoint where it stands, at slot 27
    chain = checkpoints.read_chain(node._store, pid)
    assert checkpoints.links(chain[-1])[0] == 27
    own = RemoteStore(tmp_path / "own", client)
    try:
        assert own.local_chain(pid) == []
        assert own.checkpoint_chain(pid, checkpoints.is_base) == chain
        assert service.chains_sent == {pid: 27}
        assert own.local_chain(pid) == chain  # kept: the next load reads it here
        service.chains_sent.clear()
        assert own.checkpoint_chain(pid, checkpoints.is_base) == chain
        assert service.chains_sent == {}  # the node's is not newer: nothing came
    finally:
        own.close()


def test_shipped_checkpoints_go_on_from_the_stored_chain_and_never_splice_two(
    served: tuple[Node, DataService, ServiceClient, str], tmp_path: Path
) -> None:
    node, _, _, pid = served
    stored = [bytes(value) for _, value in node._store.slot_range("checkpoints", pid, 0, 1 << 40)]
    links = [checkpoints.links(blob) for blob in stored]
    # Every 5 messages (the spawn is slot 0), a full one every 2 deltas: bases at 4 and 19, deltas at 9,
    # 14 and 24, of which the node keeps the newest chain only.
    assert links == [(19, None), (24, 19)]
    base, delta = stored
    other = Store(tmp_path / "other")
    try:
        assert checkpoints.extend(other, pid, [delta]) is False  # a delta against a state it does not hold
        assert checkpoints.read_chain(other, pid) == []
        assert checkpoints.extend(other, pid, [base]) is True
        assert checkpoints.extend(other, pid, [delta]) is True
        assert checkpoints.read_chain(other, pid) == [base, delta]
        assert checkpoints.extend(other, pid, [base, delta]) is True  # nothing newer: nothing changes
        assert checkpoints.read_chain(other, pid) == [base, delta]
        # Over a data service of that store, as a remote worker ships: a delta that does not go on from
        # its chain asks for the whole chain; a whole chain that does not either is stale.
        key = ClusterKey.load(tmp_path / "other.key")
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        guard = Guard(context, key)
        service = DataService(context, "tcp://127.0.0.1:0", key, other, node._logs)
        shipper = ServiceClient(service.address, key)
        try:
            other.computed.write(lambda txn: other.forget_checkpoints(txn, pid))
            # Not before the results up to it are stored: a worker resuming from it would skip them.
            assert shipper.call(SHIP, pid.encode(), b"whole", base, delta) == [b"later"]
            other.computed.write(lambda txn: other.put_results(txn, [(log_key(pid, 24), b'{"Output":"24"}')]))
            assert shipper.call(SHIP, pid.encode(), b"", delta) == [b"whole"]
            assert shipper.call(SHIP, pid.encode(), b"whole", delta) == [b"stale"]
            assert checkpoints.read_chain(other, pid) == []
            assert shipper.call(SHIP, pid.encode(), b"whole", base, delta) == [b"ok"]
            assert checkpoints.read_chain(other, pid) == [base, delta]
            assert service.shipped == 2
        finally:
            shipper.close()
            service.stop()
            guard.stop()
            context.term()
    finally:
        other.close()


def test_without_the_cluster_key_the_data_service_answers_nothing(
    served: tuple[Node, DataService, ServiceClient, str]
) -> None:
    _, service, _, pid = served
    public, secret = zmq.curve_keypair()
    stranger = ServiceClient(service.address, ClusterKey(public, secret), timeout=2.0)
    try:
        with pytest.raises(RemoteError, match=r"did not answer head within 2 s"):
            RemoteLogs(stranger).last_slot(pid)
    finally:
        stranger.close()


@contextmanager
def serving(tmp_path: Path, node: Store) -> Iterator[tuple[DataService, ServiceClient]]:
    """A data service over ``node``'s store and log, on TCP with CURVE, and a member's client."""
    key = ClusterKey.load(tmp_path / "cluster.key")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    guard = Guard(context, key)
    service = DataService(context, "tcp://127.0.0.1:0", key, node, ShardLogs(node, 1))
    client = ServiceClient(service.address, key)
    try:
        yield service, client
    finally:
        client.close()
        service.stop()
        guard.stop()
        context.term()


def remote_worker(folder: Path, client: ServiceClient, checkpoint_every: int) -> Worker:
    """A worker as a Ray-placed one runs: its own store in ``folder``, the node's data through ``client``."""
    config = WorkerConfig(0, str(folder), str(folder / "run"), Limits(10**9, 1 << 30, checkpoint_every), 1 << 30)
    return Worker(config, RemoteStore(folder / "own", client), no_compute_time, logs=RemoteAheadLogs(client))


def test_a_remote_worker_keeps_only_the_results_after_its_newest_checkpoint(tmp_path: Path) -> None:
    """Its results are the node's to keep: a long-lived remote worker holds those after each process's
    newest checkpoint, which a reload reads again (the failed slots it skips, and the last slot), not
    a copy of every result it ever reported. A reload before the node stored any of them still
    resumes where the process stood."""
    node = Store(tmp_path / "node")
    pid, entries = populate(node, ["Inc"] * 12 + ["Trap", "Inc"])  # slot 13 fails, after the checkpoint at 11
    with serving(tmp_path, node) as (_, client):  # the node has stored no result yet
        worker = remote_worker(tmp_path / "w", client, checkpoint_every=4)
        own = worker.store
        assert isinstance(own, RemoteStore)
        try:
            out = feed(worker, entries)
            assert [split_key(key)[1] for key, _ in out] == list(range(15))
            assert checkpoints.links(own.local_chain(pid)[-1])[0] == 11  # after slots 3, 7 and 11
            assert [slot for slot, _ in Store.slot_range(own, "results", pid, 0, 99)] == [11, 12, 13, 14]
            assert own.slot_range("results", pid, 11, 14) == [(split_key(key)[1], result) for key, result in out[11:]]
            before = worker.digest_one(pid, b"", [])
            again = Worker(worker.config, own, no_compute_time, logs=RemoteAheadLogs(client))
            process = again.hosted(pid)
            assert process is not None
            assert (process.checkpoint_slot, process.inbox.next_slot, process.failed) == (11, 15, {13})
            assert again.digest_one(pid, b"", []) == before
        finally:
            own.close()
    node.close()


def drained(shipper: Shipper) -> None:
    """Wait until what was queued on ``shipper`` has been shipped."""
    if shipper.after(b"drained"):
        assert eventually(lambda: shipper.take_ready() == [b"drained"], seconds=60)


def test_a_worker_whose_chain_the_node_refused_ships_no_delta_until_its_next_base(tmp_path: Path) -> None:
    """The node holds one worker's chain of a process; another worker's chain started before that
    chain's newest checkpoint and goes on from a state of its own. Its delta asks for its whole
    chain, which does not go on from the node's either: "stale". Its next deltas would not link
    either, so none is sent; its next base is, and is stored."""
    node = Store(tmp_path / "node")
    pid, entries = populate(node, ["Inc"] * 30)
    with serving(tmp_path, node) as (service, client):
        cadences = {"a": 7, "b": 5, "c": 31}  # a checkpoint every so many messages
        workers = {name: remote_worker(tmp_path / name, client, every) for name, every in cadences.items()}
        stores = {name: worker.store for name, worker in workers.items()}
        try:
            for worker in workers.values():
                feed(worker, entries)
            chains = {name: store.local_chain(pid) for name, store in stores.items() if isinstance(store, RemoteStore)}
            assert [checkpoints.links(blob) for blob in chains["a"]] == [(6, None), (13, 6), (20, 13), (27, 20)]
            assert [checkpoints.links(blob) for blob in chains["b"]] == [(4, None), (9, 4), (14, 9), (19, 14), (24, 19),
                                                                         (29, 24)]
            assert [checkpoints.links(blob) for blob in chains["c"]] == [(30, None)]
            held = chains["a"][:3]
            checkpoints.replace_chain(node, pid, held)  # the node holds a's chain up to slot 20
            node.computed.write(lambda txn: node.put_results(txn, [(log_key(pid, slot), b"{}") for slot in range(31)]))
            assert isinstance(stores["b"], RemoteStore)
            shipper = Shipper(client, stores["b"])
            try:
                delta = checkpoints.Encoded(29, chains["b"][-1], False)
                shipper.ship([(pid, delta)])
                drained(shipper)
                assert service.answered[SHIP] == 2  # the delta: "whole"; the whole chain: "stale"
                assert checkpoints.read_chain(node, pid) == held
                shipper.ship([(pid, delta)])
                drained(shipper)
                assert service.answered[SHIP] == 2  # not sent
                shipper.ship([(pid, checkpoints.Encoded(30, chains["c"][0], True))])
                drained(shipper)
                assert service.answered[SHIP] == 3
                assert checkpoints.read_chain(node, pid) == chains["c"]
                shipper.ship([(pid, delta)])  # sent again: at or below the node's newest, dropped as "ok"
                drained(shipper)
                assert (service.answered[SHIP], shipper.shipped) == (4, 2)
            finally:
                shipper.close(10)
        finally:
            for store in stores.values():
                store.close()
    node.close()
