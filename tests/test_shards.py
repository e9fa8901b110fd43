"""Scheduler shards: each an OS process with its own log. A spawn picks one with its Scheduler tag;
kill -9 of a shard mid-stream loses and duplicates nothing acknowledged, and its successor continues
every slot and hash chain."""

from __future__ import annotations

import base64
import itertools
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric import ed25519

from actorao import InvalidMessage, Node, Overloaded
from actorao.mailbox import READY, acks_address, unpack
from actorao.message import Assignment
from actorao.persist import Store
from actorao.su._shard import ShardConfig
from tests.streams import eventually, incs


def decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def chained(node: Node, pid: str) -> list[dict[str, object]]:
    """The process's log, checked: slots contiguous from 0, each hash chain linking the one before."""
    entries = [orjson.loads(body) for _, body in node._logs.log_range(pid, 0, 1 << 40)]
    assert [entry["Nonce"] for entry in entries] == list(range(len(entries)))
    for before, after in itertools.pairwise(entries):
        previous = Assignment(pid, before["Nonce"], before["Id"], before["Timestamp"], before["Hash-Chain"])
        assert after["Hash-Chain"] == previous.next_hash_chain(), f"chain broken at slot {after['Nonce']} of {pid}"
    return entries


def test_a_spawn_lands_on_the_shard_its_scheduler_tag_names(tmp_path: Path, counter: bytes) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=3) as node:
        addresses = node.schedulers
        assert len(set(addresses)) == 3 and addresses[0] == node.identity
        for address in addresses:
            pid = node.spawn(counter, {"Scheduler": address})
            assert node.scheduler_of(pid) == address
            assert {"name": "Scheduler", "value": address} in node.reads.spawn(pid).doc()["Tags"]
            assert node.result(node.send(pid, {"Action": "Inc"})).output == "1"
        unknown = "u" * 43
        with pytest.raises(InvalidMessage) as caught:
            node.spawn(counter, {"Scheduler": unknown})
        assert caught.value.field == "Tags['Scheduler']" and addresses[1] in str(caught.value)
        spread = {node.scheduler_of(node.spawn(counter)) for _ in range(60)}
        assert spread == set(addresses)  # without a tag, the node spreads processes over every shard


def test_a_node_reopened_with_fewer_shards_keeps_every_process(tmp_path: Path, counter: bytes) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:
        far = node.spawn(counter, {"Scheduler": node.schedulers[1]})
        node.send_many([(far, {"Action": "Inc"}, "")] * 3)
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:
        assert len(node.schedulers) == 2  # a data path keeps every shard it ever had
        assert node.result(node.send(far, {"Action": "Inc"})).output == "4"


def test_kill_9_of_a_shard_mid_stream_loses_and_duplicates_nothing_acknowledged(tmp_path: Path, counter: bytes) -> None:
    with Node(tmp_path / "node", workers=2, schedulers=2) as node:
        pids = [node.spawn(counter, {"Scheduler": node.schedulers[i % 2]}) for i in range(8)]
        with incs(node, pids, warm=2000, copies=10) as acked:
            [victim] = [shard for shard in node.scheduler_processes() if shard["id"] == "su-1"]
            os.kill(victim["pid"], signal.SIGKILL)
            before = len(acked)
            assert eventually(lambda: len(acked) >= before + 2000)  # the stream goes on through the restarted shard
        [shard] = [s for s in node.scheduler_processes() if s["id"] == "su-1"]
        assert shard["pid"] != victim["pid"] and shard["restarts"] == 1 and shard["state"] == "running"
        assert len(acked) >= before + 2000
        node.results(acked[-200:], timeout=120)
        for pid in pids:
            entries = chained(node, pid)
            ids = [entry["Id"] for entry in entries]
            assert len(ids) == len(set(ids)), f"a message was assigned twice in {pid}"
            mine = {(ack.slot, ack.id) for ack in acked if ack.process == pid}
            assert mine <= {(entry["Nonce"], entry["Id"]) for entry in entries}, "an acknowledged message was lost"
            assert node.dry_run(pid, {"Action": "Get"}).output == str(len(entries) - 1)


def test_rehost_during_a_stream_loses_no_slot_gives_none_twice_and_replays_to_the_same_state(
    tmp_path: Path, counter: bytes
) -> None:
    with Node(tmp_path / "node", workers=2, schedulers=2) as node:
        first, second = node.schedulers
        pid = node.spawn(counter, {"Scheduler": first})
        moved_back = threading.Event()
        with incs(node, [pid], warm=200, copies=20) as acked:  # some traffic first
            there = node.rehost(pid, second)
            assert node.scheduler_of(pid) == second
            assert eventually(lambda: len(acked) >= there + 200)
            back = node.rehost(pid, first)  # and back again: the log now spans three stretches
            moved_back.set()
            assert eventually(lambda: len(acked) >= back + 200)
        assert moved_back.is_set() and 0 < there < back < len(acked)
        node.results(acked[-20:], timeout=120)
        entries = chained(node, pid)  # contiguous slots, one chain across both shards
        assert len({entry["Id"] for entry in entries}) == len(entries)
        assert {(ack.slot, ack.id) for ack in acked} <= {(entry["Nonce"], entry["Id"]) for entry in entries}
        assert node.dry_run(pid, {"Action": "Get"}).output == str(len(entries) - 1)
        digest = node.state_digest(pid)
        # The signed hand-off records are in both logs, the same bytes, signed by the shard that let go.
        records = [dict(store.handoffs(pid)) for store in node._logs.stores]
        assert records[0] == records[1] and set(records[0]) == {there, back}
        keys = node.scheduler_keys()
        for slot, by in ((there, first), (back, second)):
            record = orjson.loads(records[0][slot])
            signature = record.pop("signature")
            ed25519.Ed25519PublicKey.from_public_bytes(decode(keys[by])).verify(
                decode(signature), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
            assert record["slot"] == slot and record["to"] == (second if by == first else first)
        page, more = node.reads.log_page(pid, None, None, len(entries))  # one page across all three stretches
        assert [entry.slot for entry in page] == list(range(len(entries))) and not more

    # A fresh replay of the whole log, across both hand-offs, from no checkpoint and no result:
    store = Store(tmp_path / "node")
    store.forget_computed()
    store.close()
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:
        assert node.scheduler_of(pid) == first
        assert node.state_digest(pid) == digest
        assert node.result(node.send(pid, {"Action": "Inc"})).output == str(len(entries))


def test_a_hand_off_cut_between_release_and_adoption_is_finished_when_the_node_opens(
    tmp_path: Path, counter: bytes
) -> None:
    """The node stops after the old shard let go of a process and before the new one took it: no
    shard would take its messages. The next open adopts it where it was released, and the slots and
    the chain go on across the hand-off."""
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:
        first, second = node.schedulers
        pid = node.spawn(counter, {"Scheduler": first})
        node.results(node.send_many([(pid, {"Action": "Inc"}, "")] * 5), timeout=60)
        node._schedulers.release(pid, 1).get(timeout=60)  # the first half of node.rehost(pid, second)
        with pytest.raises(Overloaded):
            node.send(pid, {"Action": "Inc"})
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:
        assert node.scheduler_of(pid) == second
        ack = node.send(pid, {"Action": "Inc"})
        assert ack.slot == 6 and node.result(ack, timeout=60).output == "6"
        assert len(chained(node, pid)) == 7
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:  # and once adopted, it stays put
        assert node.scheduler_of(pid) == second and node.result(node.send(pid, {"Action": "Inc"})).output == "7"


def test_a_batch_across_shards_that_one_refuses_says_which_messages_were_assigned(
    tmp_path: Path, counter: bytes
) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:
        first, second = node.schedulers
        here, there = node.spawn(counter, {"Scheduler": first}), node.spawn(counter, {"Scheduler": second})
        node._schedulers.release(there, 0).get(timeout=60)  # its shard now refuses it (a hand-off under way)
        with pytest.raises(Overloaded) as refused:
            node.send_many([(pid, {"Action": "Inc"}, "") for pid in (here, there, here)])
        acks = refused.value.acks  # type: ignore[attr-defined]
        assert [ack is None for ack in acks] == [False, True, False]
        assert [ack.slot for ack in acks if ack is not None] == [1, 2]
        assert node.result(acks[2], timeout=60).output == "2"  # what was acknowledged is in the log, evaluated


def test_a_burst_of_sigterms_stops_a_shard_and_never_wedges_it(tmp_path: Path) -> None:
    """A shard whose node dies gets SIGTERM from the kernel (die_with_parent), and may get more from
    whoever stops it. Its handler runs between two bytecodes of whatever the main thread is doing, even
    inside an earlier run of itself: it must take no lock, or the shard wedges inside a commit, holding
    LMDB's write lock, and the next node on the same folder waits on it for ever."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    config = ShardConfig(0, str(tmp_path / "node"), str(runtime), "o" * 43, "s" * 43, 1 << 24, 1000, os.getpid())
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    acks = context.socket(zmq.PULL)
    acks.bind(acks_address(runtime))
    shard = subprocess.Popen([sys.executable, "-m", "actorao.su", config.to_json()])
    try:
        assert acks.poll(60_000), "the shard never said READY"
        assert unpack(acks.recv())[0] == READY  # its handler is in place
        for _ in range(20_000):  # signals that land while the handler runs, until the shard has gone
            if shard.poll() is not None:
                break
            os.kill(shard.pid, signal.SIGTERM)
        assert shard.wait(timeout=60) == 0
    finally:
        if shard.poll() is None:
            shard.kill()
            shard.wait()
        acks.close(linger=0)
        context.term()


def test_a_serial_senders_commits_keep_the_shards_log_file_its_length(tmp_path: Path, counter: bytes) -> None:
    """A synced commit that lengthens its file waits for the file system's journal as well: a shard
    keeps its log written out ahead after each small commit, so a serial sender's commits overwrite
    it in place. (A flood's large commits lengthen the file as they go.)"""
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:
        pid = node.spawn(counter)
        node.send(pid, {"Action": "Inc"})  # its commit's answer is out before the shard writes ahead
        logs = [path for path in (tmp_path / "node").rglob("data.mdb") if "computed" not in path.parts]
        assert len(logs) == 1
        sizes = set()
        for _ in range(200):  # about 200 KB of log: well inside the file written ahead
            node.send(pid, {"Action": "Inc"}, "x" * 800)
            sizes.add(logs[0].stat().st_size)
        assert len(sizes) == 1
        assert node.result(node.send(pid, {"Action": "Inc"})).output == "202"
