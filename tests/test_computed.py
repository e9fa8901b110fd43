"""Results and checkpoints in their own environment, never synced (persist/_computed.py): what a
machine crash may tear is dropped and computed again from the log; what a process crash leaves is
kept, and a result a caller was told about can always be read."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson
import pytest

from actorao import Node
from actorao.persist import Store, log_key
from actorao.persist._computed import FOLDER, State, current_boot, read_state, write_state
from tests.streams import eventually

FORGED = orjson.dumps({"Output": "999", "Messages": [], "Spawns": [], "Assignments": []})


def _counted(path: Path, counter: bytes, messages: int) -> tuple[str, list[str]]:
    """A counter process sent ``messages`` Incs, every result read; the node is closed after."""
    with Node(path, workers=1, schedulers=1) as node:
        pid = node.spawn(counter)
        acks = node.send_many([(pid, {"Action": "Inc"}, "")] * messages)
        assert [r.output for r in node.results(acks, timeout=60)] == [str(n) for n in range(1, messages + 1)]
        return pid, [ack.id for ack in acks]


def _forge(path: Path, pid: str, slot: int) -> None:
    """Put a result no evaluation gives at ``slot``: it is served only if the environment is kept."""
    store = Store(path)
    store.computed.write(lambda txn: store.put_results(txn, [(log_key(pid, slot), FORGED)]))
    store.close()


@pytest.mark.parametrize(("boot", "kept"), [("an earlier boot", False), ("this boot", True)])
def test_an_environment_left_open_by_another_boot_is_dropped_and_computed_again(
    tmp_path: Path, counter: bytes, boot: str, kept: bool
) -> None:
    path = tmp_path / "node"
    pid, ids = _counted(path, counter, 5)
    _forge(path, pid, 3)
    assert read_state(path / FOLDER) == State(current_boot(), clean=True)  # the last to close marked it
    # As a machine crash leaves it (opened, never closed), in another boot or in this one (a kill -9).
    write_state(path / FOLDER, State(current_boot() if boot == "this boot" else boot, clean=False))
    with Node(path, workers=1, schedulers=1) as node:
        assert read_state(path / FOLDER) == State(current_boot(), clean=False)
        outputs = [node.result(message, timeout=60).output for message in ids]
        assert outputs == ["1", "2", "999" if kept else "3", "4", "5"]
        if not kept:
            # Every slot was evaluated again from the log. A result is read from the store as soon as its
            # worker commits it, which is before the worker reports it: the count comes with the reports.
            assert eventually(lambda: node.evaluated >= 5), node.evaluated
            assert node.verify(pid).ok
            assert node.result(node.send(pid, {"Action": "Inc"}), timeout=60).output == "6"


def test_an_environment_lmdb_cannot_open_is_dropped_and_computed_again(tmp_path: Path, counter: bytes) -> None:
    path = tmp_path / "node"
    pid, ids = _counted(path, counter, 4)
    (path / FOLDER / "data.mdb").write_bytes(b"\xff" * 8192)  # not an LMDB file any more
    write_state(path / FOLDER, State(current_boot(), clean=False))
    with Node(path, workers=1, schedulers=1) as node:
        assert [node.result(message, timeout=60).output for message in ids] == ["1", "2", "3", "4"]
        assert node.verify(pid).ok


def test_a_result_reported_before_its_worker_is_killed_is_read_from_the_store(
    tmp_path: Path, counter: bytes
) -> None:
    """The worker's commit is not synced, but it is in the page cache before the result is reported:
    killing the worker at once loses nothing a caller was told."""
    with Node(tmp_path / "node", workers=1, schedulers=1) as node:
        pid = node.spawn(counter)
        for expected in range(1, 6):
            ack = node.send(pid, {"Action": "Inc"})
            assert node.result(ack, timeout=60).output == str(expected)
            victim = node._pool.supervisor.pid_of("worker-0")
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            # Read straight from the store, while the worker is dead or coming back: no evaluation can
            # have put it there since.
            stored = node.reads.results(pid, ack.slot - 1, ack.slot, 1, True)
            assert [(entry.slot, orjson.loads(entry.result)["Output"]) for entry in stored] == [
                (ack.slot, str(expected))]
            assert node.result(ack, timeout=60).output == str(expected)
        assert node.verify(pid).ok


def test_results_and_checkpoints_an_older_store_kept_in_its_main_environment_are_moved(
    tmp_path: Path, counter: bytes
) -> None:
    path = tmp_path / "node"
    with Node(path, workers=1, schedulers=1, checkpoint_every=2) as node:
        pid = node.spawn(counter)
        ids = [ack.id for ack in node.send_many([(pid, {"Action": "Inc"}, "")] * 5)]
        node.results(ids, timeout=60)
    store = Store(path)  # as an older store has them: in the main environment's results and checkpoints
    moved = {"results": [(log_key(pid, slot), result) for slot, result in store.slot_range("results", pid, 0, 99)],
             "checkpoints": store.computed.read(lambda txn: [(bytes(k), bytes(v))
                                                             for k, v in txn.cursor(db=store.checkpoints)])}
    assert len(moved["results"]) == 6 and moved["checkpoints"]
    store.write(lambda txn: [txn.put(k, v, db=store.db[name]) for name, pairs in moved.items() for k, v in pairs])
    store.forget_computed()
    store.close()
    with Node(path, workers=1, schedulers=1, checkpoint_every=2) as node:
        assert [node.result(message, timeout=60).output for message in ids] == ["1", "2", "3", "4", "5"]
        assert node.reads.checkpoints(pid)
        assert all(node._store.read(lambda txn, name=name: txn.stat(node._store.db[name])["entries"]) == 0
                   for name in ("results", "checkpoints"))
        assert node.verify(pid).ok
        # Nothing was evaluated again: the results and checkpoints moved. The one worker reports in order,
        # so any evaluation again would be counted before the next message's.
        assert node.result(node.send(pid, {"Action": "Inc"}), timeout=60).output == "6"
        assert eventually(lambda: node.evaluated >= 1)
        assert node.evaluated == 1
