"""``Node.verify`` and ``actorao verify``: a replay from the log alone, in a fresh instance with no
checkpoint, against the hash chain, the stored results and the worker's memory hash. Tampering is
written through persist's own operations, as a disk or an operator could change the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from actorao import Node
from actorao.cli import main
from actorao.persist import log_key


def sent(node: Node, pid: str, actions: list[str]) -> int:
    """Send ``actions`` to ``pid`` in order, wait for every result; the last slot."""
    acks = [node.send(pid, {"Action": action}) for action in actions]
    node.results(acks, timeout=60)
    return acks[-1].slot


def test_a_clean_process_verifies_with_its_traps_rolled_back(make_node: Callable[..., Node], trapper: bytes) -> None:
    node = make_node(checkpoint_every=3)  # checkpoints are taken, and the replay ignores them
    pid = node.spawn(trapper, {"Name": "t"})
    last = sent(node, pid, ["Inc", "Trap", "Inc", "Inc", "Trap", "Inc", "Inc"])
    report = node.verify(pid)
    assert report.ok, report.summary()
    assert report.slots == last + 1 == 8
    assert report.digest == node.state_digest(pid) and report.first is None
    assert report.summary().startswith(f"{pid}: ok, 8 slots replayed")


def test_a_tampered_result_is_reported_at_its_slot(make_node: Callable[..., Node], counter: bytes) -> None:
    node = make_node()
    pid = node.spawn(counter)
    sent(node, pid, ["Inc"] * 6)
    forged = orjson.dumps({"Output": "999", "Messages": [], "Spawns": [], "Assignments": []})
    node._store.computed.write(lambda txn: node._store.put_results(txn, [(log_key(pid, 4), forged)]))
    report = node.verify(pid)
    assert not report.ok
    assert [(m.kind, m.slot) for m in report.mismatches] == [("result", 4)]
    assert "999" in report.mismatches[0].detail and '"4"' in report.mismatches[0].detail
    assert report.summary().startswith(f"{pid}: MISMATCH at slot 4: result:")


def _rewrite_log_entry(node: Node, pid: str, slot: int, change: Callable[[dict[str, object]], None]) -> None:
    store = node._logs.of(pid)
    assert store is not None
    entry = store.log_entry(pid, slot)
    assert entry is not None
    doc = orjson.loads(entry)
    once = doc["Id"]
    change(doc)
    store.write(lambda txn: store.put_assignment(txn, pid, slot, orjson.dumps(doc), once, None))


def test_a_tampered_log_entry_breaks_the_chain_at_its_slot(make_node: Callable[..., Node], counter: bytes) -> None:
    node = make_node()
    pid = node.spawn(counter)
    sent(node, pid, ["Inc"] * 6)
    _rewrite_log_entry(node, pid, 3, lambda doc: doc.update({"Hash-Chain": "A" * 43}))
    report = node.verify(pid)
    assert report.first is not None and (report.first.kind, report.first.slot) == ("chain", 3)
    assert "does not follow from slot 2" in report.first.detail


def test_a_message_swapped_into_the_log_is_caught_at_its_slot(make_node: Callable[..., Node], counter: bytes) -> None:
    """Another id at slot 2: its chain link to slot 3 breaks, and the index points nowhere near it."""
    node = make_node()
    pid = node.spawn(counter)
    sent(node, pid, ["Inc"] * 4)
    _rewrite_log_entry(node, pid, 2, lambda doc: doc.update({"Id": "B" * 43}))
    report = node.verify(pid)
    assert report.first is not None and (report.first.kind, report.first.slot) == ("chain", 2)
    assert "indexed at nowhere" in report.first.detail


def test_a_process_whose_spawn_traps_verifies(make_node: Callable[..., Node], trapper: bytes) -> None:
    node = make_node()
    pid = node.spawn(trapper, {"Action": "Trap"})
    sent(node, pid, ["Inc", "Inc"])
    assert node.dry_run(pid, {"Action": "Get"}).output == "2"
    report = node.verify(pid)
    assert report.ok, report.summary()
    assert report.slots == 3


def test_a_process_verifies_across_a_rehost(tmp_path: Path, trapper: bytes) -> None:
    with Node(tmp_path / "node", workers=1, schedulers=2) as node:
        pid = node.spawn(trapper, {"Scheduler": node.schedulers[0]})
        sent(node, pid, ["Inc", "Trap", "Inc"])
        first = node.rehost(pid, node.schedulers[1])
        last = sent(node, pid, ["Inc", "Inc", "Trap", "Inc"])
        assert node.scheduler_of(pid) == node.schedulers[1] and first == 4
        report = node.verify(pid)
        assert report.ok, report.summary()
        assert report.slots == last + 1 == 8
        # A hand-off record changed after it was signed (here, the head it continues from) is caught at its slot.
        store = node._logs.stores[1]
        (slot, raw), = store.handoffs(pid)
        record = orjson.loads(raw)
        record["head"][1] = "C" * 43
        store.write(lambda txn: store.put_handoff(txn, pid, slot, orjson.dumps(record)))
        report = node.verify(pid)
        assert report.first is not None and (report.first.kind, report.first.slot) == ("chain", first)
        assert "is not signed by shard 0's key" in report.first.detail


@pytest.mark.parametrize("workers", [1], ids=["workers=1"])
def test_the_cli_exits_non_zero_on_a_mismatch_and_says_where(
    make_node: Callable[..., Node], counter: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = make_node()
    clean, tampered = node.spawn(counter), node.spawn(counter)
    sent(node, clean, ["Inc"] * 3)
    sent(node, tampered, ["Inc"] * 3)
    forged = orjson.dumps({"Output": "7", "Messages": [], "Spawns": [], "Assignments": []})
    node._store.computed.write(lambda txn: node._store.put_results(txn, [(log_key(tampered, 2), forged)]))
    node.close()
    path = str(tmp_path / "node")
    assert main(["verify", clean, "--path", path, "--workers", "1"]) == 0
    assert capsys.readouterr().out.strip().startswith(f"{clean}: ok, 4 slots replayed")
    assert main(["verify", "--path", path, "--workers", "1"]) == 1  # every process
    out = capsys.readouterr().out
    assert f"{clean}: ok" in out and f"{tampered}: MISMATCH at slot 2: result:" in out
    assert main(["verify", "no-such-process", "--path", path, "--workers", "1"]) == 1
    assert "no process no-such-process" in capsys.readouterr().err
