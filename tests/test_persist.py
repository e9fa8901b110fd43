"""The LMDB store on real files: sub-databases, key order, and map growth that callers never see."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import lmdb
import orjson

from actorao.persist import SUBDATABASES, Store, log_key, split_key

PID = "P" * 43


def test_named_subdatabases_exist(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        names = store.read(lambda txn: [bytes(k) for k, _ in txn.cursor()])
        assert sorted(names) == sorted(name.encode() for name in SUBDATABASES)
    finally:
        store.close()


def test_log_keys_sort_by_process_then_slot() -> None:
    keys = [log_key(PID, slot) for slot in (0, 1, 255, 256, 70000)]
    assert keys == sorted(keys)
    assert split_key(log_key(PID, 70000)) == (PID, 70000)


def test_log_range_and_last_slot(tmp_path: Path) -> None:
    store = Store(tmp_path)
    other = "Q" * 43
    try:
        def body(txn: lmdb.Transaction) -> None:
            for slot in range(10):
                txn.put(log_key(PID, slot), f"m{slot}".encode(), db=store.log)
            txn.put(log_key(other, 0), b"x", db=store.log)

        store.write(body)
        assert store.last_slot("log", PID) == 9
        assert store.last_slot("log", other) == 0
        assert store.last_slot("log", "R" * 43) is None
        assert store.last_slot("results", PID) is None
        assert store.log_range(PID, 3, 5) == [(3, b"m3"), (4, b"m4"), (5, b"m5")]
        assert store.log_range(PID, 8, 20) == [(8, b"m8"), (9, b"m9")]
        # An empty range is empty, also below slot 0: a rollback of slot 0 replays slots 0..-1.
        assert store.log_range(PID, 0, -1) == []
        assert store.log_range(PID, 5, 4) == []
        assert store.slot_range("results", PID, 0, -1) == []
    finally:
        store.close()


def test_the_map_grows_on_demand_and_no_map_full_error_escapes(tmp_path: Path) -> None:
    store = Store(tmp_path, map_size=256 * 1024)
    try:
        for batch in range(20):
            store.write(
                lambda txn, batch=batch: [
                    txn.put(log_key(PID, batch * 100 + i), b"v" * 1024, db=store.log) for i in range(100)
                ]
            )
        assert store.env.info()["map_size"] > 256 * 1024
        assert store.last_slot("log", PID) == 1999
        assert len(store.log_range(PID, 0, 5000)) == 2000
    finally:
        store.close()


def _grow_elsewhere(path: str) -> None:
    store = Store(path, map_size=256 * 1024)
    for i in range(600):
        store.write(lambda txn, i=i: txn.put(log_key("Z" * 43, i), b"w" * 1024, db=store.log))
    store.close()


def test_growth_in_another_os_process_is_adopted(tmp_path: Path) -> None:
    store = Store(tmp_path, map_size=256 * 1024)
    try:
        child = multiprocessing.get_context("spawn").Process(target=_grow_elsewhere, args=(str(tmp_path),))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        store.write(lambda txn: txn.put(log_key(PID, 0), b"after", db=store.log))
        assert store.get("log", log_key(PID, 0)) == b"after"
        assert store.last_slot("log", "Z" * 43) == 599
    finally:
        store.close()


def test_an_attestation_is_found_by_the_commit_that_assigned_the_slot_and_old_stores_still_answer(
    tmp_path: Path,
) -> None:
    """The messages index names the commit of each assignment, and its attestation is kept under that
    number: no per-head index to insert into. Stores written before keep their head index, still read."""
    store = Store(tmp_path)
    pid, other = "P" * 43, "Q" * 43
    sent, kept, old = "M" * 43, "N" * 43, "O" * 43

    def entry(message_id: str) -> bytes:
        return orjson.dumps({"Id": message_id})

    def first(txn: lmdb.Transaction) -> None:
        store.put_assignment(txn, pid, 0, entry(sent), sent, None, 1)
        store.put_attestation(txn, 1, b"commit 1")

    def second(txn: lmdb.Transaction) -> None:  # the same message, assigned to one more process
        store.put_assignment(txn, other, 3, entry(sent), store.once_key(sent, other), None, 2)
        store.put_assignment(txn, pid, 1, entry(kept), kept, None, 2)
        store.put_attestation(txn, 2, b"commit 2")

    def written_before_commit_numbers(txn: lmdb.Transaction) -> None:
        txn.put(log_key(pid, 2), entry(old), db=store.log)
        txn.put(old.encode(), log_key(pid, 2), db=store.messages)
        txn.put(b"an attestation", b"old", db=store.db["attestations"])
        txn.put(log_key(pid, 4), b"an attestation", db=store.db["attested"])  # a head after slot 2

    for body in (first, second, written_before_commit_numbers):
        store.write(body)
    assert store.last_commit() == 2
    assert [store.attestation_covering(pid, slot) for slot in (0, 1, 2)] == [b"commit 1", b"commit 2", b"old"]
    assert store.attestation_covering(other, 3) == b"commit 2"
    assert store.attestation_covering(pid, 9) is None
    assert store.assignment_of(sent) == log_key(pid, 0) and store.assignment_of(sent, other) == log_key(other, 3)
    assert store.assignment_of(old) == log_key(pid, 2)
    store.close()
