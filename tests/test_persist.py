"""The LMDB store on real files: sub-databases, key order, and map growth that callers never see."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import lmdb
import orjson

from actorao.persist import SUBDATABASES, Store, log_key, split_key
from actorao.persist._env import AHEAD

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


def test_entries_are_appended_in_write_order_and_a_store_written_before_them_still_reads(tmp_path: Path) -> None:
    """A commit appends its entries to ``entries`` in the order it wrote them; ``slots`` keeps, by
    process number and slot, where each is; numbers are given in the order of each process's first
    entry. A store written before kept the entries in ``log`` itself: those are read where they are,
    beside the new ones, with no migration."""
    store = Store(tmp_path)
    pid, other, third = "P" * 43, "Q" * 43, "R" * 43

    def entry(message_id: str, slot: int) -> bytes:
        return orjson.dumps({"Id": message_id, "Nonce": slot, "Owner": "o", "Tags": [{"name": "A", "value": "b"}]})

    def written_before_entries(txn: lmdb.Transaction) -> None:
        for slot in (0, 1):
            txn.put(log_key(pid, slot), entry(f"old{slot}".ljust(43, "x"), slot), db=store.log)
        txn.put(pid.encode(), b"{}", db=store.processes)

    ids = [f"new{n}".ljust(43, "x") for n in range(4)]
    fresh = [(log_key(other, 0), entry(ids[0], 0)), (log_key(pid, 2), entry(ids[1], 2)),
             (log_key(pid, 3), entry(ids[2], 3)), (log_key(other, 1), entry(ids[3], 1))]
    store.write(written_before_entries)
    store.write(lambda txn: store.put_fresh_assignments(txn, fresh, [i.encode() for i in ids], 7))
    single = entry("one".ljust(43, "x"), 4)
    store.write(lambda txn: store.put_assignment(txn, pid, 4, single, "one".ljust(43, "x"), None, 8))
    spawned = entry("spawn".ljust(43, "x"), 0)
    store.write(lambda txn: store.put_assignment(txn, third, 0, spawned, "spawn".ljust(43, "x"), None, 9))

    def dump(db: object) -> list[tuple[bytes, bytes]]:
        return store.read(lambda txn: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)])

    def number(n: int) -> bytes:
        return n.to_bytes(4, "big")

    assert [body for _, body in dump(store.entries)] == [body for _, body in fresh] + [single, spawned]
    assert [int.from_bytes(at, "big") for at, _ in dump(store.entries)] == [0, 1, 2, 3, 4, 5]
    assert dump(store.numbers) == sorted([(other.encode(), number(0)), (pid.encode(), number(1)),
                                          (third.encode(), number(2))])
    assert dump(store.slots) == [(number(0) + (slot).to_bytes(8, "big"), at.to_bytes(8, "big"))
                                 for slot, at in ((0, 0), (1, 3))] + [
        (number(1) + (slot).to_bytes(8, "big"), at.to_bytes(8, "big")) for slot, at in ((2, 1), (3, 2), (4, 4))] + [
        (number(2) + (0).to_bytes(8, "big"), (5).to_bytes(8, "big"))]

    logged = [entry(f"old{slot}".ljust(43, "x"), slot) for slot in (0, 1)] + [fresh[1][1], fresh[2][1], single]
    assert store.log_range(pid, 0, 9) == list(enumerate(logged))
    assert store.log_range(pid, 1, 2) == [(1, logged[1]), (2, logged[2])]
    assert store.log_range(pid, 3, 3) == [(3, logged[3])] and store.log_range(pid, 5, 9) == []
    assert store.log_range(other, 0, 9) == [(0, fresh[0][1]), (1, fresh[3][1])]
    assert store.log_range(third, 0, 0) == [(0, spawned)] and store.log_range("S" * 43, 0, 9) == []
    assert [store.log_entry(pid, slot) for slot in range(6)] == [*logged, None]
    assert store.entry_at(log_key(other, 1)) == fresh[3][1] and store.entry_at(log_key("S" * 43, 0)) is None
    assert store.head(pid) == (4, single) and store.head(other) == (1, fresh[3][1])
    assert store.head(third) == (0, spawned) and store.head("S" * 43) is None
    assert [store.last_slot("log", p) for p in (pid, other, third, "S" * 43)] == [4, 1, 0, None]
    page, more = store.log_page(pid, 1, 9, 2, 1 << 20)
    assert [(slot, raw) for slot, raw, _ in page] == [(1, logged[1]), (2, logged[2])] and more
    assert store.entry_with_item(log_key(pid, 3)) == (logged[3], None)
    assert store.read(lambda txn: store.entry_in(txn, log_key(pid, 0))) == logged[0]
    assert store.assignment_of(ids[3]) == log_key(other, 1)
    store.index_existing()  # reads each process's spawn, slot 0, from the old layout
    assert store.tagged(b"p", "A", "b", 9) == [pid]
    store.close()
    reopened = Store(tmp_path)  # numbers are read back, and the next is given after them
    reopened.write(lambda txn: reopened.put_assignment(txn, "S" * 43, 0, spawned, "s2".ljust(43, "x"), None, 10))
    assert reopened.read(lambda txn: bytes(txn.get(b"S" * 43, db=reopened.numbers))) == number(3)
    assert reopened.head("S" * 43) == (0, spawned) and reopened.head(pid) == (4, single)
    reopened.close()


def test_a_process_number_given_in_a_transaction_that_failed_is_given_again(tmp_path: Path) -> None:
    """A number is kept in memory only once committed: an aborted transaction's numbers are forgotten,
    and the next transaction gives them afresh, so no two processes ever share one."""
    store = Store(tmp_path)
    pid, other = "P" * 43, "Q" * 43

    def fails(txn: lmdb.Transaction) -> None:
        store.put_assignment(txn, pid, 0, b'{"Id": "a"}', "a".ljust(43, "x"), None, 1)
        raise RuntimeError("abort")

    try:
        store.write(fails)
    except RuntimeError:
        pass
    store.write(lambda txn: store.put_assignment(txn, other, 0, b'{"Id": "b"}', "b".ljust(43, "x"), None, 2))
    store.write(lambda txn: store.put_assignment(txn, pid, 0, b'{"Id": "c"}', "c".ljust(43, "x"), None, 3))
    numbers = store.read(lambda txn: {bytes(k): bytes(v) for k, v in txn.cursor(db=store.numbers)})
    assert numbers == {other.encode(): (0).to_bytes(4, "big"), pid.encode(): (1).to_bytes(4, "big")}
    assert store.log_range(pid, 0, 0) == [(0, b'{"Id": "c"}')] and store.log_range(other, 0, 0) == [(0, b'{"Id": "b"}')]
    store.close()


def test_results_are_keyed_by_a_process_number_and_those_an_older_store_kept_still_read(tmp_path: Path) -> None:
    """Results are kept by process number (the computed environment's own) and slot, so a commit over
    processes spawned together writes neighbouring keys. A store older than that kept them by process
    id: those are read beside the new ones, and one computed again replaces the older one."""
    store = Store(tmp_path)
    pid, other = "P" * 43, "Q" * 43
    old = [(log_key(pid, slot), f'{{"Output":"old {slot}"}}'.encode()) for slot in range(3)]
    store.computed.write(lambda txn: [txn.put(key, value, db=store.results) for key, value in old])
    fresh = [(log_key(other, 0), b'{"Output":"o0"}'), (log_key(pid, 3), b'{"Output":"3"}'),
             (log_key(pid, 4), b'{"Output":"4"}'), (log_key(pid, 3), b'{"Output":"3 again"}'),
             (log_key(pid, 1), b'{"Output":"1 again"}')]
    store.computed.write(lambda txn: store.put_results(txn, fresh))

    def dump(db: object) -> list[tuple[bytes, bytes]]:
        return store.computed.read(lambda txn: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)])

    number = [n.to_bytes(4, "big") for n in range(2)]
    assert dump(store.computed.db["result_numbers"]) == [(pid.encode(), number[1]), (other.encode(), number[0])]
    assert [key for key, _ in dump(store.numbered_results)] == [
        number[0] + (0).to_bytes(8, "big"), *(number[1] + slot.to_bytes(8, "big") for slot in (1, 3, 4))]
    assert [key for key, _ in dump(store.results)] == [old[0][0], old[2][0]]  # slot 1 was computed again

    expected = [(0, b'{"Output":"old 0"}'), (1, b'{"Output":"1 again"}'), (2, b'{"Output":"old 2"}'),
                (3, b'{"Output":"3 again"}'), (4, b'{"Output":"4"}')]
    assert store.slot_range("results", pid, 0, 9) == expected
    assert store.slot_range("results", pid, 2, 3) == expected[2:4]
    assert store.result_page(pid, 0, 9, 3, False, 1 << 20) == expected[::-1][:3]
    assert store.result_page(pid, 1, 9, 2, True, 1 << 20, keep=lambda slot, _: slot != 2) == [expected[1], expected[3]]
    assert store.results_at([log_key(pid, 2), log_key(pid, 4), log_key(pid, 7), log_key(other, 0)]) == [
        (log_key(pid, 2), b'{"Output":"old 2"}'), (log_key(pid, 4), b'{"Output":"4"}'),
        (log_key(other, 0), b'{"Output":"o0"}')]
    assert [store.last_slot("results", p) for p in (pid, other, "R" * 43)] == [4, 0, None]
    store.computed.write(lambda txn: store.forget_results_before(txn, pid, 3))
    assert store.slot_range("results", pid, 0, 9) == expected[3:]
    store.close()
    reopened = Store(tmp_path)  # a new process reads the numbers back, and keeps giving them in order
    reopened.computed.write(lambda txn: reopened.put_results(txn, [(log_key("R" * 43, 0), b"{}"),
                                                                   (log_key(pid, 5), b"{}")]))
    assert reopened.computed.read(lambda txn: bytes(txn.get(b"R" * 43, db=reopened.computed.db["result_numbers"]))) \
        == (2).to_bytes(4, "big")
    assert reopened.slot_range("results", pid, 0, 9) == [*expected[3:], (5, b"{}")]
    reopened.computed.forget_results()
    assert reopened.slot_range("results", pid, 0, 9) == [] and reopened.last_slot("results", other) is None
    reopened.close()


def test_a_synced_store_is_allocated_ahead_so_its_commits_keep_the_file_length_and_it_reopens_whole(
    tmp_path: Path,
) -> None:
    """A commit that lengthens the data file makes its sync wait for the file system's journal: the
    store writes its file out past its pages between commits, and LMDB reads a longer file as it was."""
    data = tmp_path / "db" / "data.mdb"
    store = Store(tmp_path, map_size=64 << 20)
    try:
        def put(first: int, count: int) -> None:
            store.write(lambda txn: [txn.put(log_key(PID, slot), b"m" * 1000, db=store.log)
                                     for slot in range(first, first + count)])

        put(0, 1)
        store.allocate_ahead()
        allocated = data.stat().st_size
        used = (store.env.info()["last_pgno"] + 1) * store.env.stat()["psize"]
        assert allocated == used + AHEAD
        assert data.stat().st_blocks * 512 >= allocated  # written, not a hole a commit would fill
        for first in range(1, 200, 10):  # about 200 KB of entries: within the step, not a byte longer
            put(first, 10)
            assert data.stat().st_size == allocated
        store.allocate_ahead()
        assert data.stat().st_size == allocated  # still more than half a step ahead: nothing to do
        for first in range(200, 1200, 50):  # past half the step: the next call allocates further
            put(first, 50)
            store.allocate_ahead()
        assert data.stat().st_size > allocated
    finally:
        store.close()
    reopened = Store(tmp_path, map_size=64 << 20)
    try:
        assert reopened.read(lambda txn: txn.stat(reopened.log)["entries"]) == 1200
        assert reopened.log_range(PID, 0, 1199)[-1] == (1199, b"m" * 1000)
    finally:
        reopened.close()


def test_a_store_that_is_not_synced_allocates_nothing_ahead(tmp_path: Path) -> None:
    store = Store(tmp_path, sync=False)
    try:
        store.write(lambda txn: txn.put(log_key(PID, 0), b"m", db=store.log))
        before = (tmp_path / "db" / "data.mdb").stat().st_size
        store.allocate_ahead()
        assert (tmp_path / "db" / "data.mdb").stat().st_size == before
    finally:
        store.close()
