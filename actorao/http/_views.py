"""Read-only views of a node's store in the JSON shapes AO's SU and CU answer with.

Cursors are slots: a page ``from`` slot F starts after F, and ``to`` slot T ends at T, so a client
passes the last cursor it saw as the next ``from``.
"""

from __future__ import annotations

from typing import Any

import lmdb
import orjson

from actorao._exceptions import UnknownProcess
from actorao.ans104 import DataItem
from actorao.cu import worker_entries
from actorao.message import Assignment, encode_id, normalize_tags
from actorao.node import Node
from actorao.persist import log_key, split_key

_LAST_SLOT = (1 << 64) - 1
PAGE_BYTES = 8 * 1024 * 1024  # a page stops early past this much message data; has_next_page says so


def signed_item(txn: lmdb.Transaction, store: Any, item_id: str) -> DataItem | None:
    """The data item ``item_id`` came in as, if it came in signed."""
    raw = txn.get(item_id.encode(), db=store.items)
    return DataItem.parse(bytes(raw)) if raw is not None else None


class LogView:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.store = node.store

    # -- SU shapes ------------------------------------------------------------------------------
    def _message_json(self, doc: dict[str, Any], item: DataItem | None) -> dict[str, Any]:
        return {
            "id": doc["Id"],
            "owner": {"address": doc["Owner"], "key": encode_id(item.owner) if item is not None else ""},
            "data": doc["Data"],
            "tags": doc["Tags"],
            "signature": encode_id(item.signature) if item is not None else "",
            "anchor": doc["Anchor"] or None,
            "target": doc["Target"],
        }

    def _assignment_json(self, pid: str, doc: dict[str, Any]) -> dict[str, Any]:
        tags = [
            ("Process", pid), ("Epoch", str(doc["Epoch"])), ("Nonce", str(doc["Nonce"])),
            ("Hash-Chain", doc["Hash-Chain"]), ("Block-Height", str(doc["Block-Height"])),
            ("Timestamp", str(doc["Timestamp"])), ("Message", doc["Id"]),
        ]
        return {
            "id": _assignment_id(pid, doc),
            "owner": {"address": self.node.identity, "key": ""},
            "tags": [{"name": name, "value": value} for name, value in tags],
            "data": "",
            "anchor": None,
            "target": None,
            "signature": None,
        }

    def _edge_node(self, txn: lmdb.Transaction, pid: str, raw: bytes) -> dict[str, Any]:
        doc = orjson.loads(raw)
        return {"message": self._message_json(doc, signed_item(txn, self.store, doc["Id"])),
                "assignment": self._assignment_json(pid, doc)}

    def _known(self, txn: lmdb.Transaction, pid: str) -> None:
        if txn.get(pid.encode(), db=self.store.processes) is None:
            raise UnknownProcess(f"no process {pid} on this node")

    def page(self, pid: str, first: int | None, last: int | None, limit: int) -> dict[str, Any]:
        """A page of ``pid``'s log: slots after ``first`` up to ``last``, at most ``limit``."""
        def body(txn: lmdb.Transaction) -> dict[str, Any]:
            self._known(txn, pid)
            start = 0 if first is None else first + 1
            stop = _LAST_SLOT if last is None else last
            edges: list[dict[str, Any]] = []
            more = False
            size = 0
            for slot, raw in _range(txn, self.store.log, pid, start, stop):
                if len(edges) == limit or (edges and size + len(raw) > PAGE_BYTES):
                    more = True
                    break
                size += len(raw)
                edges.append({"node": self._edge_node(txn, pid, raw), "cursor": str(slot)})
            return {"page_info": {"has_next_page": more}, "edges": edges}

        return self.store.read(body)

    def message(self, message_id: str, pid: str) -> dict[str, Any]:
        key = self.node.result_key(message_id, pid)

        def body(txn: lmdb.Transaction) -> dict[str, Any]:
            return self._edge_node(txn, pid, _entry(txn, self.store.log, key))

        return self.store.read(body)

    def latest(self, pid: str) -> dict[str, Any]:
        def body(txn: lmdb.Transaction) -> dict[str, Any]:
            self._known(txn, pid)
            cursor = txn.cursor(db=self.store.log)
            upper = log_key(pid, _LAST_SLOT)
            found = cursor.prev() if cursor.set_range(upper) else cursor.last()
            if not found or bytes(cursor.key())[:-8] != pid.encode():
                raise UnknownProcess(f"process {pid} has no log")
            return self._edge_node(txn, pid, bytes(cursor.value()))

        return self.store.read(body)

    def process(self, pid: str) -> dict[str, Any]:
        """The process's spawn message, as the SU's /processes/{pid} answers."""
        def body(txn: lmdb.Transaction) -> dict[str, Any]:
            self._known(txn, pid)
            doc = orjson.loads(_entry(txn, self.store.log, log_key(pid, 0)))
            item = signed_item(txn, self.store, pid)
            message = self._message_json(doc, item)
            return {
                "process_id": pid,
                "block": str(doc["Block-Height"]),
                "owner": message["owner"],
                "tags": doc["Tags"],
                "timestamp": doc["Timestamp"],
                "data": doc["Data"],
                "anchor": message["anchor"],
                "signature": message["signature"],
            }

        return self.store.read(body)

    def process_tags(self, pid: str) -> tuple[tuple[str, str], ...]:
        raw = self.store.get("log", log_key(pid, 0))
        if raw is None:
            raise UnknownProcess(f"no process {pid} on this node")
        return normalize_tags(orjson.loads(raw)["Tags"])

    # -- CU shapes ------------------------------------------------------------------------------
    def results(
        self, pid: str, first: int | None, last: int | None, limit: int, ascending: bool, *, cron_only: bool = False
    ) -> bytes:
        """``{"edges": [{"cursor", "node"}]}`` of stored results; each node is the result's JSON as
        the module produced it, spliced in without re-encoding."""
        def body(txn: lmdb.Transaction) -> bytes:
            self._known(txn, pid)
            start = 0 if first is None else first + 1
            stop = _LAST_SLOT if last is None else last
            if ascending:
                found = _range(txn, self.store.results, pid, start, stop)
            else:
                found = _range_reversed(txn, self.store.results, pid, start, stop)
            edges: list[bytes] = []
            log_db = self.store.log
            size = 0
            for slot, raw in found:
                if cron_only and not orjson.loads(_entry(txn, log_db, log_key(pid, slot)))["Cron"]:
                    continue
                size += len(raw)
                if edges and size > PAGE_BYTES:  # the client asks again from the last cursor
                    break
                edges.append(b'{"cursor":"%d","node":%s}' % (slot, raw))
                if len(edges) == limit:
                    break
            return b'{"edges":[' + b",".join(edges) + b"]}"

        return self.store.read(body)

    def status(self) -> dict[str, Any]:
        node = self.node
        tree = node.tree()
        return {
            "address": node.identity,
            "processes": len(node.scheduler.processes),
            "assigned": node.scheduler.assigned,
            "evaluated": node.evaluated,
            "workers": node.workers,
            "workers_running": sum(1 for entry in worker_entries(tree) if entry.get("state") == "running"),
            "tree": tree,
        }


def _entry(txn: lmdb.Transaction, db: Any, key: bytes) -> bytes:
    """A log entry that an index or a result says exists."""
    raw = txn.get(key, db=db)
    assert raw is not None, "indexes and results point into the log"
    return bytes(raw)


def _assignment_id(pid: str, doc: dict[str, Any]) -> str:
    return Assignment(pid, doc["Nonce"], doc["Id"], doc["Timestamp"], doc["Hash-Chain"], doc["Block-Height"],
                      doc["Epoch"]).id


def _range(txn: lmdb.Transaction, db: Any, pid: str, first: int, last: int) -> Any:
    """(slot, value) of ``pid`` with first <= slot <= last, ascending, lazily."""
    cursor = txn.cursor(db=db)
    stop = log_key(pid, last)
    if not cursor.set_range(log_key(pid, first)):
        return
    for key, value in cursor:
        if bytes(key) > stop:
            return
        yield split_key(bytes(key))[1], bytes(value)


def _range_reversed(txn: lmdb.Transaction, db: Any, pid: str, first: int, last: int) -> Any:
    cursor = txn.cursor(db=db)
    start, stop = log_key(pid, first), log_key(pid, last)
    found = cursor.set_range(stop)
    if found and bytes(cursor.key()) > stop:
        found = cursor.prev()
    elif not found:
        found = cursor.last()
    while found:
        key = bytes(cursor.key())
        if key < start:
            return
        yield split_key(key)[1], bytes(cursor.value())
        found = cursor.prev()
