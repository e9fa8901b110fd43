"""The scheduler unit on a real LMDB store: slots, chains, group commit, dedup and restart."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from pathlib import Path

import orjson
import pytest

from actorao import ActoraoError, NodeStopped, Overloaded, UnknownProcess
from actorao.message import Assignment, Message, Process, encode_id, module_json, new_id, with_ao_tags
from actorao.persist import Store, log_key
from actorao.su import ModuleRecord, NewMessages, SchedulerUnit

OWNER = new_id(b"owner")
MODULE = ModuleRecord(new_id(b"module"), b"\0asm\1\0\0\0", b'{"owner":"o","tags":[]}')


class Pushed(list[tuple[str, bytes, bytes]]):
    def __call__(self, entries: list[tuple[str, bytes, bytes]]) -> None:
        self.extend(entries)


def spawn(su: SchedulerUnit) -> str:
    pid = new_id(b"process")
    tags = with_ao_tags({"Module": MODULE.id, "Scheduler": OWNER}, "Process")
    return su.submit(Process(pid, OWNER, MODULE.id, OWNER, tags), MODULE).get(timeout=10).process


def message(pid: str, mid: str | None = None) -> Message:
    return Message(mid or new_id(b"m"), OWNER, pid, with_ao_tags({"Action": "Inc"}, "Message"))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


def test_slots_are_contiguous_from_the_spawn_at_zero(store: Store) -> None:
    pushed = Pushed()
    su = SchedulerUnit(store, pushed)
    pid = spawn(su)
    acks = [su.submit(message(pid)).get(timeout=10) for _ in range(5)]
    su.close()
    assert [ack.slot for ack in acks] == [1, 2, 3, 4, 5]
    assert [orjson.loads(body)["Nonce"] for _, _, body in pushed] == [0, 1, 2, 3, 4, 5]
    assert store.last_slot("log", pid) == 5


def test_waiting_senders_share_one_synced_commit(store: Store) -> None:
    su = SchedulerUnit(store, Pushed())
    pid = spawn(su)
    before = su.commits
    futures = [su.submit(message(pid)) for _ in range(5000)]
    acks = [future.get(timeout=30) for future in futures]
    su.close()
    assert sorted(ack.slot for ack in acks) == list(range(1, 5001))
    assert su.commits - before < 100


def test_a_restarted_su_continues_the_slots_and_the_chain(store: Store, tmp_path: Path) -> None:
    su = SchedulerUnit(store, Pushed())
    pid = spawn(su)
    su.submit(message(pid)).get(timeout=10)
    su.close()
    store.close()
    reopened = Store(tmp_path)
    pushed = Pushed()
    su = SchedulerUnit(reopened, pushed)
    assert su.knows(pid)
    ack = su.submit(message(pid)).get(timeout=10)
    su.close()
    assert ack.slot == 2
    entries = [orjson.loads(body) for _, body in reopened.log_range(pid, 0, 10)]
    previous = Assignment(pid, 1, entries[1]["Id"], entries[1]["Timestamp"], entries[1]["Hash-Chain"])
    assert entries[2]["Hash-Chain"] == previous.next_hash_chain()
    assert entries[2]["Timestamp"] >= entries[1]["Timestamp"]


def test_timestamps_never_go_backwards_when_the_clock_does(store: Store) -> None:
    times = iter([100.0, 200.0, 50.0, 300.0])
    su = SchedulerUnit(store, Pushed(), clock=lambda: next(times))
    pid = spawn(su)
    stamps = [su.submit(message(pid)).get(timeout=10).timestamp for _ in range(3)]
    su.close()
    assert stamps == [200_000, 200_000, 300_000]


def test_the_same_message_id_is_assigned_once(store: Store) -> None:
    pushed = Pushed()
    su = SchedulerUnit(store, pushed)
    pid = spawn(su)
    mid = new_id(b"once")
    first = su.submit(message(pid, mid)).get(timeout=10)
    again = su.submit(message(pid, mid)).get(timeout=10)
    su.close()
    assert first == again
    assert store.last_slot("log", pid) == 1
    assert len(pushed) == 2


def test_unknown_processes_overload_and_closing_are_refused(store: Store) -> None:
    gate = threading.Event()
    gate.set()

    def clock() -> float:  # holds the SU inside a commit while the gate is shut
        gate.wait(10)
        return time.time()

    su = SchedulerUnit(store, Pushed(), max_pending=2, clock=clock)
    with pytest.raises(UnknownProcess):
        su.submit(message(new_id(b"nobody")))
    pid = spawn(su)
    big = su.submit_many([message(pid) for _ in range(5)])  # larger than the bound, nothing waiting: taken
    assert [ack.slot for ack in big.get(timeout=10)] == [1, 2, 3, 4, 5]
    gate.clear()
    held = su.submit(message(pid))
    with pytest.raises(Overloaded, match="limit of 2"):
        su.submit_many([message(pid), message(pid)])
    gate.set()
    assert held.get(timeout=10).slot == 6
    su.close()
    with pytest.raises(NodeStopped):
        su.submit(message(new_id(b"nobody")))


def test_new_messages_are_assigned_as_the_same_messages_built_whole(store: Store) -> None:
    """The node's messages (ids minted by the SU, no object per message) get the slots, chain,
    index and module JSON that the same messages get when submitted as Messages."""
    pushed = Pushed()
    su = SchedulerUnit(store, pushed, clock=lambda: 1_700_000_000.5)
    pid, other = spawn(su), spawn(su)
    su.submit(message(pid)).get(timeout=10)  # slot 1 as a whole Message: the new ones continue its chain
    sets = [with_ao_tags({"Action": "Inc"}, "Message"), with_ao_tags({"Note": 'é "q" 100%s %b %%'}, "Message")]
    rows = [[pid, 0, "", ""], [other, 1, "data ☃ %d", "anchor %s"], [pid, 1, "x", ""]]
    raw = su.submit_new(NewMessages(OWNER, rows, sets)).get(timeout=10)
    one = su.submit_new(NewMessages(OWNER, [[other, 0, "", ""]], sets), single=True).get(timeout=10)
    su.close()
    assert [(process, slot) for _, process, slot, _ in raw] == [(pid, 2), (other, 1), (pid, 3)]
    assert one[1:3] == (other, 2) and len({ack[0] for ack in [*raw, one]}) == 4
    for (mid, process, slot, timestamp), (target, number, data, anchor) in zip(raw, rows, strict=True):
        entry = store.log_entry(process, slot)
        before = orjson.loads(store.log_entry(process, slot - 1) or b"{}")
        chain = Assignment(process, slot - 1, before["Id"], before["Timestamp"], before["Hash-Chain"]).next_hash_chain()
        expected = Message(mid, OWNER, target, sets[number], data, anchor)
        assert entry == module_json(expected, Assignment(process, slot, mid, timestamp, chain))
        assert timestamp == 1_700_000_000_500
        assert store.assignment_of(mid) == log_key(process, slot)
    assert [key for _, key, _ in pushed[-4:]] == [log_key(pid, 2), log_key(other, 1), log_key(pid, 3),
                                                  log_key(other, 2)]


def test_malformed_new_messages_are_refused_before_they_are_queued(store: Store) -> None:
    su = SchedulerUnit(store, Pushed())
    pid = spawn(su)
    sets = [with_ao_tags({"Action": "Inc"}, "Message")]
    for rows in ([[pid, 1, "", ""]], [[pid, 0, 5, ""]], [[pid, 0, ""]], [[pid, True, "", ""]]):
        with pytest.raises(ActoraoError, match="not \\(target, tag set, data, anchor\\)"):
            su.submit_new(NewMessages(OWNER, rows, sets))
    with pytest.raises(UnknownProcess):
        su.submit_new(NewMessages(OWNER, [[pid, 0, "", ""], [new_id(b"nobody"), 0, "", ""]], sets))
    assert su.queued == 0
    su.close()
    assert store.last_slot("log", pid) == 0


def test_a_commit_that_grows_the_map_runs_again_from_the_heads_before_it(tmp_path: Path) -> None:
    """LMDB map growth runs a commit's body again: the heads it moved the first time are put back, so
    the slots and hash chains of the commit that lands are those of one run."""
    store = Store(tmp_path, map_size=256 * 1024)
    su = SchedulerUnit(store, Pushed(), clock=lambda: 1_700_000_000.0, threaded=False)
    for _ in range(3):
        su.submit(Process(new_id(b"p"), OWNER, MODULE.id, OWNER,
                          with_ao_tags({"Module": MODULE.id, "Scheduler": OWNER}, "Process")), MODULE)
        su.assign_queued()
    pids = sorted(su.processes)
    size = store.env.info()["map_size"]
    tags = [with_ao_tags({"Action": "Inc"}, "Message")]
    rows = [[pids[i % 3], 0, "x" * 400, ""] for i in range(3000)]  # about 3 MB: the map grows, several times
    future = su.submit_new(NewMessages(OWNER, rows, tags))
    su.assign_queued()
    acks = future.get(timeout=10)
    su.close()
    assert store.env.info()["map_size"] > size
    assert [slot for _, _, slot, _ in acks] == [1 + i // 3 for i in range(3000)]
    for pid in pids:
        entries = [orjson.loads(body) for _, body in store.log_range(pid, 0, 2000)]
        assert [entry["Nonce"] for entry in entries] == list(range(1001))
        for before, after in itertools.pairwise(entries):
            link = Assignment(pid, before["Nonce"], before["Id"], before["Timestamp"], before["Hash-Chain"])
            assert after["Hash-Chain"] == link.next_hash_chain()


def test_slots_and_chains_are_those_the_log_format_always_had(tmp_path: Path) -> None:
    """Fixed ids and a fixed clock give the log entries an SU has always written, byte for byte, and
    an SU opened on that log continues it: a store written before keeps reading and linking the same."""
    pid, owner, module = encode_id(b"p" * 32), encode_id(b"o" * 32), encode_id(b"m" * 32)
    store = Store(tmp_path / "a")
    su = SchedulerUnit(store, Pushed(), clock=lambda: 1_700_000_000.25)
    tags = with_ao_tags({"Module": module, "Scheduler": owner}, "Process")
    su.submit(Process(pid, owner, module, owner, tags), MODULE).get(timeout=10)
    for number in range(3):
        su.submit(Message(encode_id(bytes([number]) * 32), owner, pid, with_ao_tags({"N": f"{number} %s"},
                                                                                 "Message"))).get(timeout=10)
    su.close()
    store.close()
    store = Store(tmp_path / "a")
    su = SchedulerUnit(store, Pushed(), clock=lambda: 1_700_000_001.0)  # heads read from the log
    su.submit(Message(encode_id(b"z" * 32), owner, pid, with_ao_tags({}, "Message"))).get(timeout=10)
    su.close()
    log = b"\n".join(body for _, body in store.log_range(pid, 0, 10))
    assert [orjson.loads(body)["Hash-Chain"] for _, body in store.log_range(pid, 0, 10)] == GOLDEN_CHAINS
    assert hashlib.sha256(log).hexdigest() == GOLDEN_LOG


# As an SU wrote them before it kept its heads as bytes and built module JSON from templates.
GOLDEN_CHAINS = ["p8u_3-OcffdQKqQ7eF5AlAgXuJ-_94NLNk0uNDyAwlw", "BiSQ-8nqqG0s5ziAeX0Jeywx0fhx-HJCMFGonPR_jvQ",
                 "LHqqdsycq3BPaMSuyQzu1i38DR0zpW6XE0-q3H3MoNE", "oVRDTHHxpgTJPMvhPBzfvHAhdYs1kyLVPWqW0aPYqFw",
                 "s87qQHv8rJ83PY54gS5B8rY92ppJkavV9TwZo4R97wI"]
GOLDEN_LOG = "15dd2485fdb3fc4558b07c8c70a5018abed284bc3419fc4e67eaae7e7de88536"
