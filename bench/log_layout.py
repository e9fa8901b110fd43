"""How the layout of a scheduler shard's log scales with the number of processes: the CPU, the bytes
written and the LMDB pages a message costs when each group commit's messages go to many processes. It
compares the layout of today, where the log is keyed by process and slot, with two that write the
log in commit order and index each process's slots apart. It is for the layout decision of issue 11:
``counter`` on 10,000 processes runs at 0.5-0.6x of ``counter`` on 100, and the shard's part of that
is LMDB's dirty pages (``bench/shard_cpu.py`` measures the shard itself).

Raw LMDB and no node: only each layout's puts, in synced write transactions, as a shard's group
commit makes them, PER_COMMIT messages a commit, after one entry per process (its spawn). Each log
entry is ENTRY bytes (a noop message's module JSON is about that), and its id is minted as a shard
mints them (a fixed prefix and a counter, so ids come in order).

- ``today``: log[process ‖ slot] = entry; messages[id] = process ‖ slot ‖ commit.
- ``append``: log[commit ‖ n] = entry; slots[process ‖ slot] = commit ‖ n; messages[id] = commit ‖ n.
- ``append-numbered``: as ``append``, with each process known by a 4-byte number given at its spawn
  (numbers[process] = number, written once), so slots[number ‖ slot] = commit ‖ n.

    python -m bench.log_layout [PROCESSES,...] [MESSAGES] [PER_COMMIT] [ENTRY] [synced|unsynced]
    # e.g. 100,10000 200000 1000 (a shard's log); 100,10000 200000 1000 250 unsynced (a worker's results)

Messages go round-robin in spawn order (the bench's), then again each to a process drawn at random.
Prints one JSON line per order, layout and process count: CPU µs per message (user and system), bytes
written per message (write calls, /proc/self/io), each database's leaf pages and entries at the end,
and the CPU µs an entry costs to read back when a process's whole log is read, as a worker replays one
(``read_us``: the entries of 200 processes, from the page cache). A worker's results are keyed as the
log is today, by process and slot, smaller and never synced: ENTRY and ``unsynced`` model them.
"""

from __future__ import annotations

import base64
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable

import lmdb
import orjson

from bench.shard_cpu import _cpu, _written

ENTRY = 760
READ = 200  # processes whose whole log is read back at the end, by each layout's own path
LAYOUTS = ("today", "append", "append-numbered")


def _ids(prefix: bytes) -> Callable[[int], bytes]:
    """A shard's minted ids: base64url of a fixed prefix and a counter, 43 characters, in order."""
    return lambda n: base64.urlsafe_b64encode(prefix + n.to_bytes(8, "big") + b"\0")[:43]


def run(
    layout: str, processes: int, messages: int, per_commit: int, order: str, size: int = ENTRY, sync: bool = True,
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as folder:
        env = lmdb.open(folder, map_size=1 << 34, max_dbs=4, sync=sync, metasync=sync, readahead=False)
        names = ("log", "messages", "slots", "numbers")
        dbs = {name: env.open_db(name.encode()) for name in names}
        log, index, slots, numbers = (dbs[name] for name in names)
        pids = [base64.urlsafe_b64encode(os.urandom(32))[:43] for _ in range(processes)]
        number = {pid: at.to_bytes(4, "big") for at, pid in enumerate(pids)}
        mint = _ids(os.urandom(24))
        entry = os.urandom(size)
        head = dict.fromkeys(pids, 0)
        minted = 0
        commit = 0

        def commit_of(batch: list[bytes]) -> None:
            nonlocal minted, commit
            commit += 1
            stamp = commit.to_bytes(8, "big")
            log_rows, index_rows, slot_rows = [], [], []
            for n, pid in enumerate(batch):
                slot = head[pid]
                head[pid] = slot + 1
                message = mint(minted)
                minted += 1
                if layout == "today":
                    key = pid + slot.to_bytes(8, "big")
                    log_rows.append((key, entry))
                    index_rows.append((message, key + stamp))
                else:
                    key = stamp + n.to_bytes(4, "big")
                    log_rows.append((key, entry))
                    index_rows.append((message, key))
                    owner = pid if layout == "append" else number[pid]
                    slot_rows.append((owner + slot.to_bytes(8, "big"), key))
            with env.begin(write=True) as txn:
                txn.cursor(db=log).putmulti(sorted(log_rows))
                txn.cursor(db=index).putmulti(index_rows)
                if slot_rows:
                    txn.cursor(db=slots).putmulti(sorted(slot_rows))

        for first in range(0, processes, per_commit):  # the spawns: each process's slot 0
            spawned = pids[first:first + per_commit]
            if layout == "append-numbered":
                with env.begin(write=True) as txn:
                    txn.cursor(db=numbers).putmulti([(pid, number[pid]) for pid in spawned])
            commit_of(spawned)
        written, (user, system) = _written(), _cpu()
        # round-robin in spawn order (the bench's), or each message to a process drawn at random
        draw = random.Random(7)
        targets = [pids[at % processes] if order == "round-robin" else pids[draw.randrange(processes)]
                   for at in range(messages)]
        for first in range(0, messages, per_commit):
            commit_of(targets[first:first + per_commit])
        written, (user_after, system_after) = _written() - written, _cpu()
        read, read_entries = _read_logs(env, dbs, layout, pids, number)
        with env.begin() as txn:
            stats = {name: txn.stat(db) for name, db in dbs.items()}
        pages = {name: stat["leaf_pages"] for name, stat in stats.items() if stat["entries"]}
        entries = {name: stat["entries"] for name, stat in stats.items() if stat["entries"]}
        env.close()
    return {"layout": layout, "order": order, "processes": processes, "messages": messages, "per_commit": per_commit,
            "entry_bytes": size, "synced": sync,
            "user_us": round((user_after - user) / messages * 1e6, 1),
            "system_us": round((system_after - system) / messages * 1e6, 1),
            "cpu_us": round((user_after - user + system_after - system) / messages * 1e6, 1),
            "written_bytes": round(written / messages), "leaf_pages": pages, "entries": entries,
            "read_us": round(read / read_entries * 1e6, 2), "read_entries": read_entries}


def _read_logs(
    env: lmdb.Environment, dbs: dict[str, lmdb._Database], layout: str, pids: list[bytes], number: dict[bytes, bytes],
) -> tuple[float, int]:
    """Read the whole log of up to READ processes (drawn at random), as a worker replays one, in a read
    transaction over pages in the page cache: the CPU seconds it took and the entries read."""
    chosen = random.Random(11).sample(pids, min(READ, len(pids)))
    began, got = time.process_time(), 0
    with env.begin(buffers=True) as txn:
        for pid in chosen:
            if layout == "today":  # the entries themselves, in key order
                cursor = txn.cursor(db=dbs["log"])
                if cursor.set_range(pid):
                    for key, value in cursor:
                        if not bytes(key).startswith(pid):
                            break
                        got += len(value) > 0
                continue
            prefix = pid if layout == "append" else number[pid]
            if layout == "append-numbered":  # a process is looked up by its id first
                assert txn.get(pid, db=dbs["numbers"]) == prefix
            cursor, log = txn.cursor(db=dbs["slots"]), dbs["log"]
            if cursor.set_range(prefix):
                for key, where in cursor:
                    if not bytes(key).startswith(prefix):
                        break
                    got += len(txn.get(bytes(where), db=log)) > 0
    return time.process_time() - began, got


def main(argv: list[str]) -> int:
    counts = [int(part) for part in (argv[0] if argv else "100,10000").split(",")]
    messages = int(argv[1]) if len(argv) > 1 else 200_000
    per_commit = int(argv[2]) if len(argv) > 2 else 1000
    size = int(argv[3]) if len(argv) > 3 else ENTRY
    sync = argv[4] != "unsynced" if len(argv) > 4 else True
    for order in ("round-robin", "random"):
        for layout in LAYOUTS:
            for processes in counts:
                found = run(layout, processes, messages, per_commit, order, size, sync)
                print(orjson.dumps(found).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
