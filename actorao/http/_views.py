"""Read-only views of a node's log and results in the JSON shapes AO's SU and CU answer with, read
through the node's facade (``node.reads``).

Paging follows ao's units. The SU pages by timestamp (``from`` exclusive, ``to`` inclusive, the cursor a
timestamp), or by nonce when ``from-nonce``/``to-nonce`` is given (the cursor a nonce). The CU's results
cursors are base64 JSON ``{timestamp, ordinate, cron, sort}``; ``from``/``to`` take such a cursor
(``from`` exclusive) or a timestamp (both ends inclusive, as ao's CU compares them).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

import orjson

from actorao._exceptions import InvalidMessage
from actorao._reads import LogEntry, ResultEntry
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
        tags = [  # ao's SU's, in its order
            ("Process", pid), ("Epoch", str(doc["Epoch"])), ("Nonce", str(doc["Nonce"])),
            ("Hash-Chain", doc["Hash-Chain"]), ("Block-Height", str(doc["Block-Height"])),
            ("Timestamp", str(doc["Timestamp"])), ("Data-Protocol", "ao"), ("Type", "Assignment"),
            ("Variant", "ao.TN.1"), ("Message", doc["Id"]),
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

    def _edge_node(self, entry: LogEntry, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        doc = entry.doc() if doc is None else doc
        return {"message": self._message_json(doc, signed_item(entry)),
                "assignment": self._assignment_json(entry.process, doc)}

    def page(self, pid: str, bounds: LogBounds, limit: int) -> dict[str, Any]:
        """A page of ``pid``'s log within ``bounds``, at most ``limit`` messages (see LogBounds)."""
        after, last = self._slots(pid, bounds)
        entries: list[LogEntry] = []
        more = False
        if last is None or last >= 0:
            entries, more = self.reads.log_page(pid, after, last, limit)
        docs = [entry.doc() for entry in entries]
        if bounds.by_nonce:
            cursors = [str(entry.slot) for entry in entries]
        else:
            if more and entries:
                entries, docs, more = self._whole_runs(pid, entries, docs, after, last)
            cursors = [str(doc["Timestamp"]) for doc in docs]
        edges = [{"node": self._edge_node(entry, doc), "cursor": cursor}
                 for entry, doc, cursor in zip(entries, docs, cursors, strict=True)]
        page: dict[str, Any] = {"page_info": {"has_next_page": more}, "edges": edges}
        attestation = self.reads.attestation(pid, entries[-1].slot) if entries else None
        if attestation is not None:  # the shard's signature over a head this page's chain leads to
            page["attestation"] = attestation
        return page

    def _slots(self, pid: str, bounds: LogBounds) -> tuple[int | None, int | None]:
        """(after, last) slots of a log page: the first slot is after ``after`` (None: from slot 0),
        the last is ``last`` (None: the head; negative: nothing)."""
        if bounds.by_nonce:
            after = bounds.start if bounds.start is not None and bounds.start >= 0 else None
            return after, bounds.end
        # ao's SU lists the process itself only on a first page, one with no `from`
        after = None if bounds.start is None else max(0, self.reads.first_slot_after(pid, bounds.start) - 1)
        last = None if bounds.end is None else self.reads.first_slot_after(pid, bounds.end) - 1
        return after, last

    def _whole_runs(
        self, pid: str, entries: list[LogEntry], docs: list[dict[str, Any]], after: int | None, last: int | None
    ) -> tuple[list[LogEntry], list[dict[str, Any]], bool]:
        """A page by timestamp that would end inside a run of equal timestamps ends before the run
        instead (the next page's ``from`` is a timestamp, so a split run would lose its rest), or, if
        the run fills the page, holds the whole run. Our SU stamps a burst with one millisecond."""
        stamp = docs[-1]["Timestamp"]
        if self.reads.timestamp_of(pid, entries[-1].slot + 1) != stamp:
            return entries, docs, True
        keep = sum(1 for doc in docs if doc["Timestamp"] != stamp)
        if keep:
            return entries[:keep], docs[:keep], True
        run_end = self.reads.first_slot_after(pid, stamp) - 1
        if last is not None:
            run_end = min(run_end, last)
        start = 0 if after is None else after + 1
        entries, more = self.reads.log_page(pid, after, run_end, run_end - start + 1)
        end = self.reads.head_slot(pid) if last is None else last
        return entries, [entry.doc() for entry in entries], more or run_end < end

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
    def results(self, pid: str, query: ResultsQuery, *, cron_only: bool = False) -> bytes:
        """``{"pageInfo": {"hasNextPage"}, "edges": [{"node", "cursor"}]}`` as ao's CU answers: each node
        is a result's Messages, Assignments, Spawns and Output, and results that are an Error are left
        out, as ao's CU leaves them out."""
        after = self._result_bound(pid, query.start, start=True)
        last = self._result_bound(pid, query.end, start=False)
        ascending = query.ascending
        if not cron_only:  # a cursor's sort wins over the query's; cron pages are always ascending
            ascending = next((bound.ascending for bound in (query.start, query.end)
                              if bound is not None and bound.ascending is not None), ascending)
        found: list[ResultEntry] = []
        if last is None or last >= 0:
            found = self.reads.results(pid, after, last, query.limit + 1, ascending, cron_only=cron_only, errors=False)
        sort = "ASC" if ascending else "DESC"
        edges = []
        for entry in found[: query.limit]:
            doc = orjson.loads(entry.result)
            node: dict[str, Any] = {"Messages": doc.get("Messages", []), "Assignments": doc.get("Assignments", []),
                                    "Spawns": doc.get("Spawns", [])}
            if doc.get("Output") is not None:
                node["Output"] = doc["Output"]
            edges.append({"node": node, "cursor": results_cursor(entry.timestamp, entry.slot, sort)})
        return orjson.dumps({"pageInfo": {"hasNextPage": len(found) > query.limit}, "edges": edges})

    def _result_bound(self, pid: str, bound: ResultsBound | None, *, start: bool) -> int | None:
        """The slot a results bound stands for: ``from`` as the slot it starts after, ``to`` as the last."""
        if bound is None:
            return None
        if bound.ordinate is not None:
            return bound.ordinate
        if start:  # ao's CU keeps a `from` timestamp's own results
            first = self.reads.first_slot_after(pid, bound.timestamp - 1)
            return None if first == 0 else first - 1
        return self.reads.first_slot_after(pid, bound.timestamp) - 1


@dataclass(frozen=True, slots=True)
class LogBounds:
    """An SU page's bounds: timestamps (``from`` exclusive, ``to`` inclusive), or nonces when
    ``by_nonce`` (``from-nonce`` exclusive, so -1 starts at the process itself; ``to-nonce`` inclusive)."""

    start: int | None = None
    end: int | None = None
    by_nonce: bool = False


@dataclass(frozen=True, slots=True)
class ResultsBound:
    """A results page's ``from`` or ``to``: a slot (a cursor's ordinate), else a timestamp."""

    timestamp: int
    ordinate: int | None = None
    ascending: bool | None = None  # the cursor's sort


@dataclass(frozen=True, slots=True)
class ResultsQuery:
    start: ResultsBound | None
    end: ResultsBound | None
    limit: int
    ascending: bool


_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_WHOLE = re.compile(r"-?[0-9]{1,19}")


def results_cursor(timestamp: int, slot: int, sort: str) -> str:
    """A results cursor as ao's CU makes it: base64 of JSON {timestamp, ordinate, sort}, where the
    ordinate is the nonce as text (ao adds ``cron`` for cron evaluations, which here have a nonce)."""
    text = b'{"timestamp":%d,"ordinate":"%d","sort":"%s"}' % (timestamp, slot, sort.encode())
    return base64.b64encode(text).decode()


def parse_results_bound(name: str, text: str | None) -> ResultsBound | None:
    """``from``/``to`` of a results page: a cursor (base64 JSON, as ao's CU returns them), else a
    timestamp in milliseconds, as ao's CU reads anything that is not a cursor."""
    if text is None or text == "":
        return None
    doc = _base64_object(text)
    if doc is None:
        if not _WHOLE.fullmatch(text):
            raise InvalidMessage(name, f"expected a cursor from a results page or a timestamp in ms, got {text!r:.60}")
        return ResultsBound(max(int(text), 0))
    sort = doc.get("sort")
    if sort is not None and sort not in ("ASC", "DESC"):
        raise InvalidMessage(name, f"the cursor's sort must be ASC or DESC, got {sort!r:.20}")
    ascending = None if sort is None else sort == "ASC"
    ordinate, timestamp = doc.get("ordinate"), doc.get("timestamp")
    if ordinate is not None and _WHOLE.fullmatch(str(ordinate)) and int(ordinate) >= 0:
        return ResultsBound(int(timestamp) if isinstance(timestamp, int) else 0, int(ordinate), ascending)
    if isinstance(timestamp, int) or (isinstance(timestamp, str) and _WHOLE.fullmatch(timestamp)):
        return ResultsBound(max(int(timestamp), 0), None, ascending)
    raise InvalidMessage(name, "the cursor names neither an ordinate (a nonce) nor a timestamp")


def _base64_object(text: str) -> dict[str, Any] | None:
    if not _BASE64.fullmatch(text):
        return None
    try:
        doc = orjson.loads(base64.b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _assignment_id(pid: str, doc: dict[str, Any]) -> str:
    return Assignment(pid, doc["Nonce"], doc["Id"], doc["Timestamp"], doc["Hash-Chain"], doc["Block-Height"],
                      doc["Epoch"]).id
