"""Assignments pushed ahead of their commit's fsync (``cu/_ahead.py``): a worker evaluates them at once,
holds what rests on them until the shard says the commit is durable, and forgets a process whose push
proved void. The book on its own first, then kill -9 of a real shard on each side of its commit."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from actorao import Node, Overloaded, examples
from actorao.cu._ahead import Ahead, AheadLogs
from actorao.cu._lanes import Finished, Lanes
from actorao.cu._worker import _work_of
from actorao.mailbox import AHEAD, ASSIGN, pack
from actorao.message import Message, Process, with_ao_tags
from actorao.persist import ModuleRecord, Store, log_key
from actorao.su._attest import Attester
from actorao.su._scheduler import SchedulerUnit

PID = "p" * 43


def header(commit: int, *, epoch: int = 1, first: int = 0, shard: int = 0) -> bytes:
    return orjson.dumps([shard, epoch, first, commit])


def items(*slots: int) -> list[bytes]:
    return [part for slot in slots for part in (log_key(PID, slot), b'{"Nonce": %d}' % slot)]


def turn(pid: str = PID, *, forgot: bool = False, slot: int = 1) -> Finished:
    return Finished([(log_key(pid, slot), b"result")], [], [], pid, forgot)


@pytest.fixture
def book(tmp_path: Path) -> tuple[Ahead, AheadLogs]:
    store = Store(tmp_path / "node")
    logs = AheadLogs(store, 1)
    yield Ahead(logs), logs
    logs.close()
    store.close()


def test_a_turn_is_held_until_its_commit_is_durable_and_its_entries_read_as_if_logged_meanwhile(
    book: tuple[Ahead, AheadLogs],
) -> None:
    ahead, logs = book
    took = ahead.took(header(5), items(1, 2))
    assert took is not None and took[1] == set()
    assert took[0] == {PID: [(1, b'{"Nonce": 1}'), (2, b'{"Nonce": 2}')]}
    assert logs.log_range(PID, 0, 10) == [(1, b'{"Nonce": 1}'), (2, b'{"Nonce": 2}')]
    assert logs.last_slot(PID) == 2 and logs.log_entry(PID, 2) == b'{"Nonce": 2}'
    held = turn()
    assert ahead.settle([held]) == [] and ahead.holding == 1
    other = turn("q" * 43)  # a process with nothing ahead goes out at once
    assert ahead.settle([other]) == [other]
    assert ahead.confirmed(header(4)) == set() and ahead.release() == []  # an earlier commit: not this one
    assert ahead.confirmed(header(5)) == set()
    assert ahead.release() == [held] and ahead.holding == 0
    assert logs.log_range(PID, 0, 10) == []  # dropped from the overlay: the log has them now


def test_the_same_commit_number_again_voids_the_first_push_and_its_held_turns(book: tuple[Ahead, AheadLogs]) -> None:
    ahead, _ = book
    ahead.took(header(5), items(1))
    assert ahead.settle([turn()]) == []
    took = ahead.took(header(5), items(1))  # the commit failed, and the next one took its number
    assert took is not None and took[1] == {PID}
    assert ahead.holding == 0 and PID in ahead.forgetting
    assert ahead.settle([turn()]) == []  # ran before the forgetting turn: dropped
    forgetting = turn(forgot=True)
    assert ahead.settle([forgetting]) == [] and ahead.holding == 1  # then held on the new push
    ahead.confirmed(header(5))
    assert ahead.release() == [forgetting]


@pytest.mark.parametrize(("first", "durable"), [(5, True), (4, False)])
def test_a_new_run_of_the_shard_settles_what_the_old_one_pushed_ahead(
    book: tuple[Ahead, AheadLogs], first: int, durable: bool
) -> None:
    ahead, _ = book
    ahead.took(header(5, epoch=1), items(1))
    held = turn()
    ahead.settle([held])
    took = ahead.took(header(first + 1, epoch=2, first=first), [])
    assert took is not None
    if durable:  # commit 5 reached the disk before the old run died
        assert took[1] == set() and ahead.release() == [held]
    else:
        assert took[1] == {PID} and ahead.release() == [] and ahead.holding == 0
    assert ahead.took(header(6, epoch=1), items(2)) is None  # a frame of the dead run, read late: ignored
    assert ahead.confirmed(header(6, epoch=1)) == set()


def test_two_pushes_taken_together_are_queued_as_one_batch_and_each_read_ahead_until_its_own_commit(
    book: tuple[Ahead, AheadLogs],
) -> None:
    """The worker queues a process's entries of two pushes taken in one round as one batch: confirming the
    first push takes only its own entries out of what is read ahead, and a turn waits for both."""
    ahead, logs = book
    lanes = Lanes(lambda pid, ops: Finished([], [], []), 1)
    try:
        work, _ = _work_of([pack(AHEAD, [header(5), *items(1)]), pack(AHEAD, [header(6), *items(2)])], lanes, 0, ahead)
    finally:
        lanes.stop()
        lanes.close()
    assert work == {PID: [(ASSIGN, [(1, b'{"Nonce": 1}'), (2, b'{"Nonce": 2}')])]}
    held = turn(slot=2)
    assert ahead.settle([held]) == []
    assert ahead.confirmed(header(5)) == set() and ahead.release() == []
    assert logs.log_range(PID, 0, 10) == [(2, b'{"Nonce": 2}')]  # slot 1 is the log's now (none here)
    assert ahead.confirmed(header(6)) == set() and ahead.release() == [held]
    assert logs.log_range(PID, 0, 10) == []


@pytest.mark.parametrize("first_durable", [0, 1])
def test_a_re_hosted_process_waits_for_the_pushes_of_both_shards(
    book: tuple[Ahead, AheadLogs], first_durable: int
) -> None:
    ahead, _ = book
    ahead.took(header(5, shard=0), items(1))
    ahead.took(header(3, shard=1), items(2))  # the new shard's first push, before the old one's commit is durable
    held = turn(slot=2)
    assert ahead.settle([held]) == []
    commits = [header(5, shard=0), header(3, shard=1)]
    assert ahead.confirmed(commits[first_durable]) == set() and ahead.release() == []
    assert ahead.confirmed(commits[1 - first_durable]) == set() and ahead.release() == [held]
    later = turn(slot=3)
    assert ahead.settle([later]) == [later]  # nothing of it is ahead any more


def test_a_void_push_leaves_the_earlier_one_its_process_still_waits_for(book: tuple[Ahead, AheadLogs]) -> None:
    ahead, _ = book
    ahead.took(header(5), items(1))
    ahead.took(header(6), items(2))
    took = ahead.took(header(6), items(2))  # commit 6 failed, and the next took its number
    assert took is not None and took[1] == {PID}
    forgetting = turn(forgot=True, slot=2)
    assert ahead.settle([forgetting]) == []
    assert ahead.confirmed(header(5)) == set() and ahead.release() == []  # the new commit 6 is not durable yet
    assert ahead.confirmed(header(6)) == set() and ahead.release() == [forgetting]
    took = ahead.took(header(8), items(4))
    assert took is not None and ahead.took(header(8), items(4)) is not None  # voids 8, with nothing earlier left
    assert ahead.settle([turn(forgot=True, slot=4)]) == [] and ahead.holding == 1


def test_a_push_that_hears_nothing_is_settled_from_the_log_once_the_worker_has_listened_for_patience(
    tmp_path: Path,
) -> None:
    """A DURABLE lost with its shard: after ``patience`` with nothing more waiting in the worker's
    sockets, the log says. A worker still behind its feed (``drained`` not called) reads no log."""
    store = Store(tmp_path / "node")  # shard 0's log is the node's own store
    logs = AheadLogs(store, 1)
    now = [0.0]
    ahead = Ahead(logs, patience=1.0, clock=lambda: now[0])
    pushed: list[tuple[list[tuple[str, bytes, bytes]], int]] = []
    attester = Attester(store, "s" * 43)  # a commit's number is kept with its attestation
    su = SchedulerUnit(store, lambda entries: None, clock=lambda: 1_700_000_000.0, threaded=False,
                       push_ahead=lambda pushes, commit: pushed.append((pushes, commit)) or [],
                       durable=lambda commit: None, attest=attester.attest, sign=attester.sign)
    tags = with_ao_tags({"Module": "m" * 43, "Scheduler": "o" * 43}, "Process")
    module = ModuleRecord("m" * 43, b"\0asm\1\0\0\0", b'{"owner":"o","tags":[]}')
    pid = "p" * 43
    su.submit(Process(pid, "o" * 43, "m" * 43, "o" * 43, tags), module)
    su.assign_queued()
    for _ in range(2):
        su.submit(Message("i" * 42 + str(len(pushed)), "o" * 43, pid, with_ao_tags({"Action": "Inc"}, "Message")))
        su.assign_queued()
    (logged, commit), (_, later) = [push for push in pushed if push[0]]  # the spawn pushes nothing ahead
    ahead.took(header(commit), [part for _, key, body in logged for part in (key, body)])
    forged = [part for _, key, _ in pushed[-1][0] for part in (key, b'{"not": "what the log holds"}')]
    ahead.took(header(later), forged)
    held = turn(pid, slot=1)
    assert ahead.settle([held]) == []
    now[0] = 5.0
    assert ahead.check_logs() == set() and ahead.holding == 1  # behind its feed: the DURABLEs may be there
    ahead.drained()
    assert ahead.check_logs() == {pid}  # the second push's entries are not the log's: void, the first confirmed
    assert ahead.holding == 0 and pid in ahead.forgetting
    again = turn(pid, forgot=True, slot=2)
    assert ahead.settle([again]) == [again]  # nothing of it is ahead: the first push was confirmed
    su.close()
    logs.close()
    store.close()


# -- kill -9 of a real shard, with the worker holding a message it took ahead -------------------------

HOOKS = """
import os, signal, sys, time
MARKS = os.environ.get("ACTORAO_TEST_AHEAD")
SLOT = (3).to_bytes(8, "big")

def mark(name):
    open(os.path.join(MARKS, name), "w").close()

def wait_for(name):  # the worker's side of the story, before the shard dies
    path = os.path.join(MARKS, name)
    for _ in range(6000):
        if os.path.exists(path):
            return
        time.sleep(0.01)

if MARKS and "actorao.cu" in sys.orig_argv:
    from actorao.cu import _worker
    run = _worker.Worker.run

    def run_and_mark(self, pid, ops):
        done = run(self, pid, ops)
        if any(kind == _worker.FORGET for kind, _ in ops):
            mark("forgot")
        if any(key[-8:] == SLOT for key, _ in done.results):
            mark("evaluated")
        return done

    _worker.Worker.run = run_and_mark

if MARKS and "actorao.su" in sys.orig_argv:
    from actorao.su import _shard
    push_ahead, durable = _shard._Replies.push_ahead, _shard._Replies.durable
    WHEN = os.environ["ACTORAO_TEST_AHEAD_KILL"]
    victim = []

    def push_then_die(self, pushes, commit):
        rest = push_ahead(self, pushes, commit)
        if any(key[-8:] == SLOT for _, key, _ in pushes) and not os.path.exists(os.path.join(MARKS, "killed")):
            victim.append(commit)
            if WHEN == "before commit":
                wait_for("evaluated")
                mark("killed")
                os.kill(os.getpid(), signal.SIGKILL)
        return rest

    def die_before_durable(self, commit):
        if victim == [commit] and WHEN == "before durable":
            wait_for("evaluated")
            mark("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        durable(self, commit)

    _shard._Replies.push_ahead = push_then_die
    _shard._Replies.durable = die_before_durable
"""


@pytest.mark.parametrize("when", ["before commit", "before durable"])
def test_kill_9_of_a_shard_while_its_worker_holds_a_message_taken_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Killed before its commit, slot 3 never existed: the worker forgets the message it evaluated,
    and the one sent again takes slot 3. Killed after the commit but before DURABLE, slot 3 is in the
    log though its sender never heard: the worker, told nothing, finds it in the log and lets go of
    the result it held; the next message is slot 4.
    The echo module answers with the message it was given, so a result of the wrong one shows."""
    hook, marks = tmp_path / "hook", tmp_path / "marks"
    hook.mkdir()
    marks.mkdir()
    (hook / "sitecustomize.py").write_text(HOOKS)
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("ACTORAO_TEST_AHEAD", str(marks))
    monkeypatch.setenv("ACTORAO_TEST_AHEAD_KILL", when)
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:
        pid = node.spawn(examples.wasm("echo"))
        for _ in range(2):
            ack = node.send(pid, {"Action": "Echo"})
            assert node.result(ack).output["Id"] == ack.id
        with pytest.raises(Overloaded, match="restarted before it answered"):
            node.send(pid, {"Action": "Echo"}, "lost")  # slot 3: the shard dies before it answers
        assert (marks / "killed").exists() and (marks / "evaluated").exists()
        if when == "before durable":
            unheard = orjson.loads(node._logs.log_entry(pid, 3) or b"{}")["Id"]
            assert node.result(unheard, timeout=60).output["Data"] == "lost"  # held, then released, then stored
        again = node.send(pid, {"Action": "Echo"}, "again")
        echoed = node.result(again, timeout=60).output
        assert echoed["Id"] == again.id and echoed["Data"] == "again"
        if when == "before commit":
            assert again.slot == 3 and (marks / "forgot").exists()
        else:
            assert again.slot == 4 and not (marks / "forgot").exists()
        verified = node.verify(pid, timeout=60)
        assert verified.ok, verified.mismatches
        assert verified.slots == again.slot + 1


def test_a_stream_through_pushes_ahead_keeps_every_result_in_order_and_verifies(tmp_path: Path, counter: bytes) -> None:
    """Many commits in flight with their pushes ahead, on two shards and two workers: every result
    comes out, each after its commit, and each process replays to the same state."""
    with Node(tmp_path / "node", workers=2, schedulers=2) as node:
        pids = [node.spawn(counter, {"Scheduler": node.schedulers[i % 2]}) for i in range(4)]
        seen: list[bytes] = []
        lock = threading.Lock()

        def heard(frame: list[bytes], _: bytes | None) -> None:
            with lock:
                seen.extend(bytes(key) for key in frame[::2])

        node._rendezvous.subscribe(heard)
        acks = node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids] * 200, timeout=60)
        results = node.results(acks, timeout=120)
        assert [result.output for result in results[-4:]] == ["200"] * 4
        for pid in pids:
            slots = [int.from_bytes(key[-8:], "big") for key in seen if key[:-8] == pid.encode()]
            assert slots == sorted(slots) and set(range(1, 201)) <= set(slots)
            assert node.verify(pid, timeout=60).ok

