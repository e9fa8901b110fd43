"""The slice of an Arweave gateway's GraphQL that AO clients ask a node: transactions by id (a
module's tags before a spawn), and the node's own Scheduler-Location record. graphql-core executes
whatever query text arrives against the schema below, so fragments, variables and aliases all work.

What is searchable: the node's Scheduler-Location, stored modules and processes by any filter, and
messages by id. A gateway indexes every transaction; a node only knows its own. Modules and
processes are indexed by each tag and by owner, so a query with an exact tag filter or ``owners``
(every one aoconnect and aos send: Type and Name, Scheduler-Location by owner) reads only what its
most selective filter matches; a query that would read more than MAX_SCAN records is refused and
told to narrow itself.

Blocks come from the node: a process's or message's is the Block-Height and Timestamp its SU stamped
(this node has no base layer, so the height is 0), a module's the time it was stored. ``sort``
orders by block (height, then time; undated records first when descending, as a gateway lists pending
ones), so aos's newest-module-first query works.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import graphql
import orjson

from actorao._exceptions import ActoraoError, InvalidMessage
from actorao._reads import OWNER, LogEntry
from actorao.ans104 import DataItem
from actorao.http._views import signed_item
from actorao.message import DATA_PROTOCOL, VARIANT, block_id, encode_id, is_id
from actorao.node import Node

SCHEMA = graphql.build_schema("""
type Query {
  transaction(id: ID!): Transaction
  transactions(
    ids: [ID!], owners: [String!], recipients: [String!], tags: [TagFilter!], bundledIn: [ID!],
    block: BlockFilter, first: Int = 10, after: String, sort: SortOrder = HEIGHT_DESC
  ): TransactionConnection!
}
input TagFilter { name: String!, values: [String!]!, op: TagOperator = EQ, match: TagMatch = EXACT }
input BlockFilter { min: Int, max: Int }
enum TagOperator { EQ NEQ }
enum TagMatch { EXACT WILDCARD FUZZY_AND FUZZY_OR }
enum SortOrder { HEIGHT_ASC HEIGHT_DESC INGESTED_AT_ASC INGESTED_AT_DESC }
type TransactionConnection { pageInfo: PageInfo!, edges: [TransactionEdge!]!, count: String }
type PageInfo { hasNextPage: Boolean! }
type TransactionEdge { cursor: String!, node: Transaction! }
type Transaction {
  id: ID!, anchor: String!, signature: String!, recipient: String!, owner: Owner!, fee: Amount!,
  quantity: Amount!, data: MetaData!, tags: [Tag!]!, block: Block, parent: Parent, bundledIn: Bundle,
  ingested_at: Int
}
type Owner { address: String!, key: String! }
type Amount { winston: String!, ar: String! }
type MetaData { size: String!, type: String }
type Tag { name: String!, value: String! }
type Block { id: ID!, timestamp: Int!, height: Int!, previous: ID! }
type Parent { id: ID! }
type Bundle { id: ID! }
""")
MAX_FIRST = 100
MAX_TOKENS = 2000  # a query aoconnect sends is about 40 tokens; this bounds what a query can ask
MAX_ROOT_FIELDS = 8  # aliases of transactions(...) in one query, each a scan of the node's index
MAX_SCAN = 1000  # records one transactions(...) may read to answer
_CURSOR = re.compile(r"[0-9]{1,9}")
SCHEDULER_TTL_MS = "3600000"


def _block(height: int, timestamp_ms: int) -> dict[str, Any]:
    """A block as a gateway answers it: ids derived from the height (as WeaveDrive's /block serves them),
    the timestamp in seconds."""
    return {"id": block_id(height), "height": height, "timestamp": timestamp_ms // 1000,
            "previous": block_id(height - 1) if height > 0 else ""}


def _transaction(
    tx_id: str, owner: str, tags: list[dict[str, str]], *, item: DataItem | None = None, recipient: str = "",
    size: int = 0, block: dict[str, Any] | None = None,
) -> dict[str, Any]:
    zero = {"winston": "0", "ar": "0.000000000000"}
    return {
        "id": tx_id,
        "anchor": item.anchor_text if item is not None else "",
        "signature": encode_id(item.signature) if item is not None else "",
        "recipient": recipient,
        "owner": {"address": owner, "key": encode_id(item.owner) if item is not None else ""},
        "fee": zero,
        "quantity": zero,
        "data": {"size": str(len(item.data) if item is not None else size), "type": _content_type(tags)},
        "tags": tags,
        "block": block,
        "parent": None,
        "bundledIn": None,
        "ingested_at": block["timestamp"] if block is not None else None,
    }


def _content_type(tags: list[dict[str, str]]) -> str | None:
    return next((tag["value"] for tag in tags if tag["name"].lower() == "content-type"), None)


class Gateway:
    def __init__(self, node: Node, public_url: Callable[[], str]) -> None:
        self.node = node
        self.reads = node.reads
        self._public_url = public_url

    def execute(self, body: bytes) -> dict[str, Any]:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage("body", f"not JSON: {exc}") from None
        if not isinstance(request, dict) or not isinstance(request.get("query"), str):
            raise InvalidMessage("query", "expected a JSON object with a GraphQL 'query' string")
        variables = request.get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise InvalidMessage("variables", "expected a JSON object")
        try:
            document = graphql.parse(request["query"], max_tokens=MAX_TOKENS)
        except graphql.GraphQLError as exc:
            return {"errors": [exc.formatted]}
        errors = graphql.validate(SCHEMA, document)
        if not errors:
            roots = sum(len(d.selection_set.selections) for d in document.definitions
                        if isinstance(d, graphql.OperationDefinitionNode))
            if roots > MAX_ROOT_FIELDS:
                errors = [graphql.GraphQLError(f"{roots} root fields; this node answers at most {MAX_ROOT_FIELDS}")]
        if errors:
            return {"errors": [error.formatted for error in errors]}
        result = graphql.execute_sync(SCHEMA, document, root_value=self, variable_values=variables,
                                      operation_name=request.get("operationName"))
        return dict(result.formatted)

    # -- resolvers (graphql-core calls root fields as methods of the root value) ----------------
    def transaction(self, info: Any, id: str) -> dict[str, Any] | None:
        return self._by_id(id)

    def transactions(self, info: Any, **args: Any) -> dict[str, Any]:
        first = max(0, min(int(args.get("first") or 10), MAX_FIRST))
        after = args.get("after")
        start = int(after) if after is not None and _CURSOR.fullmatch(str(after)) else 0

        ids = args.get("ids")
        if ids:
            candidates: Iterator[dict[str, Any] | None] = (self._by_id(tx_id) for tx_id in ids[:MAX_SCAN])
        else:
            candidates = self._indexed(args)
        wanted = [tx for tx in candidates if tx is not None and _matches(tx, args)]
        found = _sorted(wanted, str(args.get("sort") or "HEIGHT_DESC"))[: start + first + 1]
        page = found[start: start + first]
        return {
            "pageInfo": {"hasNextPage": len(found) > start + first},
            "edges": [{"cursor": str(start + index + 1), "node": tx} for index, tx in enumerate(page)],
            }

    # -- what the node knows ------------------------------------------------------------------
    def scheduler_location(self) -> dict[str, Any]:
        identity = self.node.identity
        tags = [("Data-Protocol", DATA_PROTOCOL), ("Variant", VARIANT), ("Type", "Scheduler-Location"),
                ("Url", self._public_url()), ("Time-To-Live", SCHEDULER_TTL_MS)]
        tx_id = encode_id(hashlib.sha256(b"Scheduler-Location|" + identity.encode()).digest())
        return _transaction(tx_id, identity, [{"name": n, "value": v} for n, v in tags])

    def _module(self, module_id: str) -> dict[str, Any] | None:
        found = self.reads.module(module_id)
        if found is None:
            return None
        doc, size = found
        tx = _transaction(module_id, doc["owner"], doc["tags"], size=size, block=_block(0, doc.get("stored_at", 0)))
        tx["owner"]["key"], tx["signature"] = doc.get("key", ""), doc.get("signature", "")  # kept at upload
        return tx

    @staticmethod
    def _logged(tx_id: str, entry: LogEntry) -> dict[str, Any]:
        doc = entry.doc()
        return _transaction(tx_id, doc["Owner"], doc["Tags"], item=signed_item(entry), recipient=doc["Target"],
                            size=len(doc["Data"].encode()), block=_block(doc["Block-Height"], doc["Timestamp"]))

    def _by_id(self, tx_id: str) -> dict[str, Any] | None:
        if not is_id(tx_id):
            return None
        location = self.scheduler_location()
        if tx_id == location["id"]:
            return location
        module = self._module(tx_id)
        if module is not None:
            return module
        entry = self.reads.find(tx_id)
        return self._logged(tx_id, entry) if entry is not None else None

    def _indexed(self, args: dict[str, Any]) -> Iterator[dict[str, Any] | None]:
        """The records the query's most selective exact filter (a tag, or owners) matches, read
        through the index; every record when it has none. Either way at most MAX_SCAN of them."""
        filters = [(wanted["name"], wanted["values"]) for wanted in args.get("tags") or ()
                   if wanted.get("op", "EQ") == "EQ" and wanted.get("match", "EXACT") == "EXACT"]
        if args.get("owners"):
            filters.append((OWNER, args["owners"]))
        best: tuple[list[str], list[str]] | None = None
        for name, values in filters:
            modules: list[str] = []
            processes: list[str] = []
            for value in values:
                found = self.reads.tagged(name, value, MAX_SCAN + 1)
                modules += found[0]
                processes += found[1]
            if best is None or len(modules) + len(processes) < len(best[0]) + len(best[1]):
                best = (sorted(set(modules)), sorted(set(processes)))
        if best is None:
            best = (self.reads.module_ids(), self.reads.process_ids())
        if len(best[0]) + len(best[1]) > MAX_SCAN:
            raise InvalidMessage("transactions", f"this filter matches more than {MAX_SCAN} transactions on this "
                                 "node; narrow it with a Name tag or owners")
        yield self.scheduler_location()
        for module_id in best[0]:
            yield self._module(module_id)
        for pid in best[1]:
            try:
                yield self._logged(pid, self.reads.spawn(pid))
            except ActoraoError:  # spawned, not yet committed
                continue


def _sorted(found: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """``found`` in a gateway's order; the sort is stable, so ties keep the node's order."""
    def key(tx: dict[str, Any]) -> tuple[int, int]:
        block = tx["block"]
        if block is None:  # pending: first when newest come first
            return (1 << 62, 1 << 62)
        return (block["height"], block["timestamp"]) if sort.startswith("HEIGHT") else (tx["ingested_at"], 0)

    return sorted(found, key=key, reverse=sort.endswith("DESC"))


def _matches(tx: dict[str, Any], args: dict[str, Any]) -> bool:
    owners = args.get("owners")
    if owners and tx["owner"]["address"] not in owners:
        return False
    recipients = args.get("recipients")
    if recipients and tx["recipient"] not in recipients:
        return False
    for wanted in args.get("tags") or ():
        values = [tag["value"] for tag in tx["tags"] if tag["name"] == wanted["name"]]
        hit = any(value in wanted["values"] for value in values)
        if hit == (wanted.get("op", "EQ") == "NEQ"):
            return False
    return True
