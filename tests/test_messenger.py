"""The messenger: process-to-process messages on real nodes, each delivered exactly once."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from actorao import InvalidMessage, Message, Node, NodeConfig, examples
from actorao.message import new_id, with_ao_tags
from actorao.mu import outgoing_id, tick_id
from tests.streams import eventually

MakeNode = Callable[..., Node]


def count(node: Node, pid: str) -> int:
    return int(node.dry_run(pid, {"Action": "Get"}).output)


def wait_for_count(node: Node, pid: str, wanted: int, seconds: float = 60.0) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = count(node, pid)
        if seen >= wanted:
            return seen
        time.sleep(0.05)
    return count(node, pid)


def pings_in_log(node: Node, pid: str) -> list[str]:
    entries = [orjson.loads(body) for _, body in node._logs.log_range(pid, 1, 1 << 40)]
    return [entry["Id"] for entry in entries if {"name": "Action", "value": "Ping"} in entry["Tags"]]


def test_ping_pong_for_a_thousand_rounds_ends_with_exactly_a_thousand_each(make_node: MakeNode) -> None:
    node = make_node()
    first, second = node.spawn(examples.wasm("pingpong")), node.spawn(examples.wasm("pingpong"))
    node.send(first, {"Action": "Start"}, second)
    assert wait_for_count(node, first, 1000) == 1000
    time.sleep(0.2)  # nothing more may come
    assert count(node, first) == 1000 and count(node, second) == 1000
    assert len(pings_in_log(node, first)) == 1000 and len(pings_in_log(node, second)) == 1000
    assert node.undelivered() == []


def test_a_pushed_message_is_from_its_process_with_ao_tags_and_a_deterministic_id(make_node: MakeNode) -> None:
    node = make_node()
    sender, echo = node.spawn(examples.wasm("pingpong")), node.spawn(examples.wasm("echo"))
    start = node.send(sender, {"Action": "Start"}, echo)
    expected_id = outgoing_id(sender, start.slot, 0)
    # until the messenger has pushed it and the SU has assigned it
    assert eventually(lambda: node._logs.assignment_of(expected_id) is not None)
    seen = node.result(expected_id, timeout=30).output
    assert seen["From"] == sender and seen["Owner"] == node.identity
    tags = {tag["name"]: tag["value"] for tag in seen["Tags"]}
    assert tags["From-Process"] == sender and tags["Pushed-For"] == start.id
    assert tags["From-Module"] == node.process_info(sender)["module"] and tags["Action"] == "Ping"


def test_a_forged_from_process_from_outside_is_refused(make_node: MakeNode) -> None:
    node = make_node()
    echo, other = node.spawn(examples.wasm("echo")), node.spawn(examples.wasm("echo"))
    for tag in ("From-Process", "Pushed-For"):
        with pytest.raises(InvalidMessage) as caught:
            node.send(echo, {"Action": "Hi", tag: other})
        assert caught.value.field == f"Tags[{tag!r}]"
    forged = Message(new_id(), node.identity, echo, with_ao_tags({"Action": "Hi"}, "Message"), sender=other)
    with pytest.raises(InvalidMessage, match="signer"):
        node.post(forged)
    ack = node.send(echo, {"Action": "Hi"})
    assert node.result(ack).output["From"] == node.identity


def test_a_message_to_an_unknown_target_is_kept_and_listed(make_node: MakeNode) -> None:
    node = make_node()
    sender = node.spawn(examples.wasm("pingpong"))
    nowhere = new_id(b"nowhere")
    start = node.send(sender, {"Action": "Start"}, nowhere)
    node.result(start)
    assert eventually(lambda: bool(node.undelivered()))
    [kept] = node.undelivered()
    assert kept["Id"] == outgoing_id(sender, start.slot, 0) and kept["From-Process"] == sender
    assert kept["Message"]["Target"] == nowhere and "no process" in kept["Reason"]


def test_ping_pong_across_a_worker_kill_and_a_reopen_still_ends_with_exactly_a_thousand(tmp_path: Path) -> None:
    path = tmp_path / "node"
    node = Node(path, workers=2)
    first, second = node.spawn(examples.wasm("pingpong")), node.spawn(examples.wasm("pingpong"))
    node.send(first, {"Action": "Start"}, second)
    wait_for_count(node, first, 200)
    victim = node._pool.supervisor.pid_of("worker-1")
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    wait_for_count(node, first, 500)
    node.close()  # rounds in flight: their messages are in the log, their outboxes maybe not yet
    with Node(path, workers=2) as node:
        assert wait_for_count(node, first, 1000) == 1000
        time.sleep(0.2)
        assert count(node, first) == 1000 and count(node, second) == 1000
        assert len(set(pings_in_log(node, first))) == len(pings_in_log(node, first)) == 1000
        assert len(set(pings_in_log(node, second))) == len(pings_in_log(node, second)) == 1000


def test_assign_gives_an_existing_message_a_slot_in_another_process_once(make_node: MakeNode) -> None:
    node = make_node()
    first, second = node.spawn(examples.wasm("echo")), node.spawn(examples.wasm("echo"))
    ack = node.send(first, {"Action": "Note"}, "shared")
    assigned = node.assign(second, ack.id)
    assert (assigned.id, assigned.process, assigned.slot) == (ack.id, second, 1)
    assert node.assign(second, ack.id) == assigned  # once per process
    seen = node.result(assigned).output
    assert seen["Id"] == ack.id and seen["Target"] == first and seen["Data"] == "shared"
    assert [slot for slot, _ in node._logs.log_range(second, 0, 10)] == [0, 1]


class HandClock:
    """The node's wall clock, moved only by the test: cron's ticks fall due when it says, whatever the
    box's load."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_cron_ticks_at_its_interval_and_a_restart_adds_no_duplicate(tmp_path: Path) -> None:
    clock = HandClock(1_700_000_000.0)

    def ticks(node: Node, pid: str) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body in node._logs.log_range(pid, 1, 1 << 40)]

    config = NodeConfig(path=tmp_path / "node", workers=1, clock=clock)
    with Node(config) as node:
        ticking = node.spawn(examples.wasm("counter"), {"Cron-Interval": "1-second", "Cron-Tag-Action": "Inc"})
        assert int(orjson.loads(node._logs.log_range(ticking, 0, 0)[0][1])["Timestamp"]) == 1_700_000_000_000
        clock.now += 3.3  # ticks 1, 2 and 3 fall due
        assert wait_for_count(node, ticking, 3) == 3
        assert len(ticks(node, ticking)) == 3  # and no fourth: the clock has not moved on
    clock.now += 1.2  # down for a tick: tick 4 falls due, and is caught up at reopen
    with Node(config) as node:
        assert wait_for_count(node, ticking, 4) == 4
        clock.now += 1.5  # ticks 5 and 6
        assert wait_for_count(node, ticking, 6) == 6
        entries = ticks(node, ticking)
    ids = [entry["Id"] for entry in entries]
    assert ids == [tick_id(ticking, number) for number in range(1, 7)]  # in order, none skipped, none twice
    assert all(entry["Cron"] is True for entry in entries)
    assert [int(entry["Timestamp"]) for entry in entries] == [1_700_000_003_300] * 3 + [1_700_000_004_500] + [
        1_700_000_006_000] * 2  # each stamped when the node's clock said it was assigned


def test_a_bad_cron_interval_is_refused_at_spawn(make_node: MakeNode) -> None:
    node = make_node()
    with pytest.raises(InvalidMessage) as caught:
        node.spawn(examples.wasm("counter"), {"Cron-Interval": "often"})
    assert caught.value.field == "Tags['Cron-Interval']"


# -- a hostile outbox ------------------------------------------------------------------------------


def log_tags(node: Node, pid: str) -> list[dict[str, str]]:
    """The tags of every message in ``pid``'s log after its spawn, in slot order."""
    entries = [orjson.loads(body) for _, body in node._logs.log_range(pid, 1, 1 << 40)]
    return [{tag["name"]: tag["value"] for tag in entry["Tags"]} for entry in entries]


def asked(node: Node, pid: str) -> int:
    return int(node.dry_run(pid, {"Action": "Asked"}).output)


def test_a_fan_out_over_the_limit_is_an_error_result_and_sends_nothing(make_node: MakeNode) -> None:
    node = make_node(max_sends_per_result=50, max_spawns_per_result=3)
    fanout, target = node.spawn(examples.c_wasm("fanout")), node.spawn(examples.c_wasm("fanout"))
    module = node.process_info(target)["module"]
    before = len(node.processes())
    bomb = node.result(node.send(fanout, {"Action": "Fan", "Target-Process": target, "Count": "51"}))
    assert bomb.error == ("OutboxLimitExceeded: the result sends 51 messages and assignments; a result may send "
                          "at most 50 (max_sends_per_result)")
    assert (bomb.output, bomb.messages) == ("", ())
    spawn_bomb = node.result(node.send(fanout, {"Action": "Spawn", "Module": module, "Count": "4"}))
    assert spawn_bomb.error is not None and "spawns 4 processes; a result may spawn at most 3" in spawn_bomb.error
    assert asked(node, fanout) == 0  # each message over a limit was rolled back: no trace in memory
    at_limit = node.result(node.send(fanout, {"Action": "Fan", "Target-Process": target, "Count": "50"}))
    assert at_limit.error is None and asked(node, fanout) == 1
    assert node.result(node.send(fanout, {"Action": "Spawn", "Module": module, "Count": "3"})).error is None
    assert eventually(lambda: count(node, target) == 50 and len(node.processes()) == before + 3)
    # only those at the limit were delivered, each message once and in its order
    fanned = [tags for tags in log_tags(node, target) if tags.get("Action") == "Fanned"]
    assert [int(tags["Index"]) for tags in fanned] == list(range(50))
    assert node.undelivered() == []


def test_a_result_over_the_size_limit_is_an_error_result(make_node: MakeNode) -> None:
    node = make_node(max_result_bytes=100_000)
    pid = node.spawn(examples.c_wasm("fanout"))
    big = node.result(node.send(pid, {"Action": "Big", "Count": "100000"}))
    assert big.error is not None and big.error.startswith("ResultLimitExceeded: the result is 100,")
    assert "at most 100,000 bytes (max_result_bytes)" in big.error and big.output == ""
    assert asked(node, pid) == 0
    fits = node.result(node.send(pid, {"Action": "Big", "Count": "99000"}))
    assert fits.error is None and fits.output == "x" * 99_000 and asked(node, pid) == 1


def test_spawns_pushed_back_by_a_full_scheduler_are_retried_not_filed(make_node: MakeNode) -> None:
    node = make_node(max_pending=2)
    parent = node.spawn(examples.c_wasm("fanout"))
    module = node.process_info(parent)["module"]
    before = len(node.processes())
    assert node.result(node.send(parent, {"Action": "Spawn", "Module": module, "Count": "40"})).error is None
    assert eventually(lambda: sum(tags.get("Action") == "Spawned" for tags in log_tags(node, parent)) == 40)
    assert len(node.processes()) == before + 40 and node.undelivered() == []
    spawned = [tags["Process"] for tags in log_tags(node, parent) if tags.get("Action") == "Spawned"]
    assert len(set(spawned)) == 40 and set(spawned) <= set(node.processes())


def test_undelivered_messages_are_written_in_one_transaction_not_one_each(make_node: MakeNode) -> None:
    node = make_node()
    fanout = node.spawn(examples.c_wasm("fanout"))
    nowhere = new_id(b"nowhere")
    store = node._store
    transactions_before = store.env.info()["last_txnid"]
    assert node.result(node.send(fanout, {"Action": "Fan", "Target-Process": nowhere, "Count": "500"})).error is None
    assert eventually(lambda: len(node.undelivered()) == 500 and node.messenger_status()["backlog"] == 0)
    # The result's own commit and the undelivered batch, a worker's checkpoint perhaps: a few, not 500.
    assert store.env.info()["last_txnid"] - transactions_before <= 10
    assert {entry["Index"] for entry in node.undelivered()} == set(range(500))


def test_a_huge_outbox_delays_another_processs_message_by_at_most_a_round(make_node: MakeNode) -> None:
    """The messenger offers every sending process's queue in turn: an unrelated message that arrives
    while 3,000 others wait goes out in the same round as the first of them, not after all of them."""
    from actorao.mu._messenger import _SHARE

    node = make_node()
    bomb, bystander, target = (node.spawn(examples.c_wasm("fanout"), {"Name": name}) for name in "BUT")
    messenger = node._messenger
    assert messenger is not None
    handed_over = threading.Event()

    def seen(items: list[bytes], _: bytes | None) -> None:  # subscribers after the messenger's: it has the frame by now
        if any(bytes(key).startswith(bystander.encode()) for key in items[::2]):
            handed_over.set()

    node._rendezvous.subscribe(seen)
    # Their spawns' results have passed the messenger (a frame that sends nothing takes its lock): stored
    # is not enough, since a waiter finds a stored result before the listener hands its frame over.
    assert eventually(lambda: all(messenger._seen.get(pid, -1) >= 0 for pid in (bomb, bystander, target)))
    with messenger._lock:  # both results reach the messenger before it has queued either
        assert node.result(node.send(bomb, {"Action": "Fan", "Target-Process": target, "Count": "3000"})).ok
        assert node.result(node.send(bystander, {"Action": "Fan", "Target-Process": target, "Count": "1"})).ok
        assert handed_over.wait(60)
    assert eventually(lambda: count(node, target) == 3001)
    senders = [tags["From-Process"] for tags in log_tags(node, target) if tags.get("Action") == "Fanned"]
    assert len(senders) == 3001 and senders.count(bystander) == 1
    assert senders.index(bystander) <= _SHARE  # before: 3000, behind the whole outbox


def test_a_spawn_bomb_of_one_module_instantiates_it_once(make_node: MakeNode) -> None:
    """A spawn is checked by instantiating its module, start function and all, under the process's
    fuel, on the messenger's thread; a hundred children of one module must not cost a hundred."""
    node = make_node()
    parent = node.spawn(examples.c_wasm("fanout"))
    module = node.process_info(parent)["module"]
    before, instantiated = len(node.processes()), node._entrance.instantiations
    assert node.result(node.send(parent, {"Action": "Spawn", "Module": module, "Count": "20"})).error is None
    assert eventually(lambda: len(node.processes()) == before + 20)
    assert node._entrance.instantiations == instantiated  # the parent's spawn checked it already
    node.spawn(examples.wasm("counter"))  # another module is checked: the count can move
    assert node._entrance.instantiations == instantiated + 1


def test_a_messenger_that_dies_with_outboxes_queued_sends_them_once_restarted(make_node: MakeNode) -> None:
    node = make_node()
    sender, target = node.spawn(examples.c_wasm("fanout")), node.spawn(examples.c_wasm("fanout"))
    messenger = node._messenger
    assert messenger is not None
    handed_over = threading.Event()
    node._rendezvous.subscribe(
        lambda items, _: handed_over.set() if bytes(items[0]).startswith(sender.encode()) else None)
    # as above: their spawns' results have passed the messenger, whose lock a frame that sends nothing takes
    assert eventually(lambda: all(messenger._seen.get(pid, -1) >= 0 for pid in (sender, target)))
    with messenger._lock:  # the messenger holds the result's frame, cranking it, when the poison arrives
        assert node.result(node.send(sender, {"Action": "Fan", "Target-Process": target, "Count": "100"})).ok
        assert handed_over.wait(60)
        poison: list[Any] = [None, None]  # not a result key: cranking it raises, and the thread dies
        messenger.offer(poison)
    assert eventually(lambda: node._messenger is not messenger)  # its supervisor started another
    assert eventually(lambda: count(node, target) == 100)
    fanned = [tags for tags in log_tags(node, target) if tags.get("Action") == "Fanned"]
    assert [int(tags["Index"]) for tags in fanned] == list(range(100))  # each once, in order


def test_results_that_send_nothing_are_noted_without_the_messengers_thread_but_wait_behind_its_work(
        make_node: MakeNode) -> None:
    """A frame of results that send nothing is noted as cranked where it arrives, with no hand-off, unless a
    frame or a recrank before it is still to be done: noting its slots first could skip that work's."""
    node = make_node()
    pid = node.spawn(examples.wasm("noop"))
    node.catch_up(pid, 60)
    messenger = node._messenger
    assert messenger is not None
    quiet = messenger.quiet_frames
    first = node.send(pid, {"Action": "Noop"})
    assert node.result(first, timeout=60).error is None
    # The waiter may have read the result from the store (the worker commits it once its slot is
    # durable, which can be before the sender's ack) before its frame reached the messenger.
    assert eventually(lambda: messenger._seen.get(pid) == first.slot)
    assert messenger.quiet_frames == quiet + 1
    head = first.slot
    with messenger._count_lock:
        messenger._unfinished += 1  # as if a crank were still under way
    try:
        assert node.result(node.send(pid, {"Action": "Noop"}), timeout=60).error is None
        assert eventually(lambda: messenger._seen.get(pid) == head + 1)  # cranked by the thread, behind it
        assert messenger.quiet_frames == quiet + 1
    finally:
        with messenger._count_lock:
            messenger._unfinished -= 1
    assert node.result(node.send(pid, {"Action": "Noop"}), timeout=60).error is None
    assert eventually(lambda: messenger._seen.get(pid) == head + 2)
    assert messenger.quiet_frames == quiet + 2
