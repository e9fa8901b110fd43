"""A scheduler shard's pushes to the CU workers: each commit's assignments go straight to the worker
of their process, one frame per worker, with no hop through the node.

The node decides where each process lives (the CU pool's placement) and tells the shard with the
requests that name the process. While the pool moves processes between workers, it holds them
here first: the shard pushes nothing of theirs until the pool places them again, and their new
worker reads what was assigned meanwhile from the log. An assignment whose process the shard cannot
place is handed back to the node, which routes it as it always could.

A commit's assignments go out before its fsync (``push_ahead``, an AHEAD frame under the commit's
header), and a DURABLE frame with the same header follows the sync to every worker that got one. A
DURABLE that a full feed refuses is owed, and sent with the next WAKEs: a worker holds the results
of what it took ahead until it hears.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import zmq

from actorao.mailbox import AHEAD, ASSIGN, DURABLE, WAKE, ClusterKey, Outlet, feed_address, open_socket
from actorao.persist import split_key

Push = tuple[str, bytes, bytes]  # process id, log key, module JSON


class Feeds:
    """Placement as the node last told it, and an outlet to each worker's feed. Not thread-safe: the
    shard calls it under its replies lock."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], runtime: Path, key: ClusterKey | None = None) -> None:
        self._context = context
        self._runtime = runtime
        # On TCP (``key``), each worker's feed is where it said it bound (``connect``): until then, none.
        self._key = key
        self._addresses: dict[int, tuple[str, int]] = {}  # worker -> (feed, pid)
        self._placement: dict[str, int] = {}
        self._held: set[str] = set()
        self._outlets: dict[int, Outlet] = {}
        self._behind: dict[int, set[str]] = {}  # pushes a full feed refused: a WAKE catches them up
        self._ahead: set[int] = set()  # workers that got the current commit's push ahead
        self._owed: dict[int, bytes] = {}  # worker -> the newest DURABLE header a full feed refused

    def place(self, placements: dict[str, int]) -> None:
        for pid, worker in placements.items():
            if pid not in self._held:
                self._placement[pid] = worker

    def hold(self, pids: Iterable[str]) -> None:
        """Push nothing more of ``pids``: they are moving between workers."""
        for pid in pids:
            self._held.add(pid)
            self._placement.pop(pid, None)

    def unhold(self, placements: dict[str, int], workers: int) -> None:
        """Moved: push to their new workers. Feeds of workers past ``workers`` are closed, and what
        they still queued is dropped, so that a later worker at that index never gets it."""
        self._held.difference_update(placements)
        self._placement.update(placements)
        for index in [index for index in self._outlets if index >= workers]:
            self._outlets.pop(index).close()
            self._addresses.pop(index, None)
            self._behind.pop(index, None)
            self._owed.pop(index, None)

    def push(self, pushes: list[Push]) -> list[Push]:
        """Send each assignment to its process's worker; return those with no placement here."""
        return self._push(pushes, ASSIGN, None)

    def push_ahead(self, pushes: list[Push], header: bytes) -> list[Push]:
        """Send a commit's assignments to their workers before the commit is synced; ``confirm`` follows
        it. Returns those with no placement here: the node routes them once they are durable."""
        self._ahead.clear()
        return self._push(pushes, AHEAD, header)

    def confirm(self, header: bytes) -> None:
        """The commit of ``header`` is synced: tell each worker that took some of it ahead."""
        for worker in self._ahead:
            if not self._send(worker, DURABLE, [header]):
                self._owed[worker] = header  # a later one covers the earlier: commits sync in order
        self._ahead.clear()

    def _push(self, pushes: list[Push], kind: bytes, header: bytes | None) -> list[Push]:
        frames: dict[int, list[bytes]] = {}
        unplaced: list[Push] = []
        placement, held = self._placement, self._held
        for push in pushes:
            worker = placement.get(push[0])
            if worker is None:
                if push[0] not in held:  # held ones are read from the log by their next worker
                    unplaced.append(push)
                continue
            items = frames.get(worker)
            if items is None:
                items = frames[worker] = []
            items += push[1:]
        for worker, items in frames.items():
            keys = items[::2]
            if header is not None:
                items.insert(0, header)
            if self._send(worker, kind, items):
                if header is not None:
                    self._ahead.add(worker)
            else:  # the worker reads these from the log once it takes a WAKE, which is sent after the commit
                self._behind.setdefault(worker, set()).update(split_key(key)[0] for key in keys)
        return unplaced

    def flush_behind(self) -> None:
        for worker, header in list(self._owed.items()):
            if self._send(worker, DURABLE, [header]):
                del self._owed[worker]
        for worker, pids in self._behind.items():
            pids -= self._held
            if pids and self._send(worker, WAKE, [pid.encode() for pid in pids]):
                pids.clear()

    def connect(self, addresses: dict[int, tuple[str, int]]) -> None:
        """Workers' feeds, as they bound them on their last start, with the pid of that start. A worker
        that started again has a new feed (on the same port, at times). What the old outlet still
        queued is dropped with it, and a TCP PUSH whose peer is gone takes frames as if it were there:
        so every process of that worker here gets a WAKE through the new outlet, and its worker reads
        from the log what this shard pushed to the old one."""
        for worker, feed in addresses.items():
            if self._addresses.get(worker) != feed:
                self._addresses[worker] = feed
                outlet = self._outlets.pop(worker, None)
                if outlet is not None:
                    outlet.close()
                    placed = {pid for pid, index in self._placement.items() if index == worker}
                    self._behind.setdefault(worker, set()).update(placed)

    def _send(self, worker: int, kind: bytes, items: list[bytes]) -> bool:
        outlet = self._outlets.get(worker)
        if outlet is None:
            if self._key is None:
                address = feed_address(self._runtime, worker)
            elif worker in self._addresses:
                address = self._addresses[worker][0]
            else:  # not told yet: refused, as by a full feed (a WAKE catches it up)
                return False
            outlet = self._outlets[worker] = Outlet(
                open_socket(self._context, zmq.PUSH, address, bind=False, curve=self._key))
        return outlet.send_nowait(kind, items)

    def close(self) -> None:
        for outlet in self._outlets.values():
            outlet.close(linger=1000)  # what was pushed reaches workers that are still there
        self._outlets.clear()


__all__ = ["Feeds", "Push"]
