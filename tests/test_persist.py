"""The LMDB store on real files: sub-databases, key order, and map growth that callers never see."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import lmdb

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
