"""Read-only views of a node's log and results in the JSON shapes AO's SU and CU answer with, read
through the node's facade (``node.reads``).

Cursors are slots: a page ``from`` slot F starts after F, and ``to`` slot T ends at T, so a client
passes the last cursor it saw as the next ``from``.
"""

from __future__ import annotations

from typing import Any

from actorao._reads import LogEntry
from actorao.ans104 import DataItem
from actorao.message import Assignment, encode_id, normalize_tags
from actorao.node import Node


def signed_item(entry: LogEntry) -> DataItem | None:
    """The data item a log entry's message came in as, if it came in signed."""
    return DataItem.parse(entry.item) if entry.item is not None else None


class LogView:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.reads = node.reads

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

    def _edge_node(self, entry: LogEntry) -> dict[str, Any]:
        doc = entry.doc()
        return {"message": self._message_json(doc, signed_item(entry)),
                "assignment": self._assignment_json(entry.process, doc)}

    def page(self, pid: str, first: int | None, last: int | None, limit: int) -> dict[str, Any]:
        """A page of ``pid``'s log: slots after ``first`` up to ``last``, at most ``limit``."""
        entries, more = self.reads.log_page(pid, first, last, limit)
        edges = [{"node": self._edge_node(entry), "cursor": str(entry.slot)} for entry in entries]
        page: dict[str, Any] = {"page_info": {"has_next_page": more}, "edges": edges}
        attestation = self.reads.attestation(pid, entries[-1].slot) if entries else None
        if attestation is not None:  # the shard's signature over a head this page's chain leads to
            page["attestation"] = attestation
        return page

    def message(self, message_id: str, pid: str) -> dict[str, Any]:
        return self._edge_node(self.reads.message(message_id, pid))

    def latest(self, pid: str) -> dict[str, Any]:
        return self._edge_node(self.reads.latest(pid))

    def process(self, pid: str) -> dict[str, Any]:
        """The process's spawn message, as the SU's /processes/{pid} answers."""
        entry = self.reads.spawn(pid)
        doc = entry.doc()
        message = self._message_json(doc, signed_item(entry))
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

    def process_tags(self, pid: str) -> tuple[tuple[str, str], ...]:
        return normalize_tags(self.reads.spawn(pid).doc()["Tags"])

    # -- CU shapes ------------------------------------------------------------------------------
    def results(
        self, pid: str, first: int | None, last: int | None, limit: int, ascending: bool, *, cron_only: bool = False
    ) -> bytes:
        """``{"edges": [{"cursor", "node"}]}`` of stored results; each node is the result's JSON as
        the module produced it, spliced in without re-encoding."""
        found = self.reads.results(pid, first, last, limit, ascending, cron_only=cron_only)
        edges = [b'{"cursor":"%d","node":%s}' % (slot, raw) for slot, raw in found]
        return b'{"edges":[' + b",".join(edges) + b"]}"


def _assignment_id(pid: str, doc: dict[str, Any]) -> str:
    return Assignment(pid, doc["Nonce"], doc["Id"], doc["Timestamp"], doc["Hash-Chain"], doc["Block-Height"],
                      doc["Epoch"]).id
