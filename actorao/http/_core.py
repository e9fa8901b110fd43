"""The slice of AO-Core (AO mainnet, HyperBEAM's paths) that aoconnect's mainnet mode calls, on the
same port as the legacy routes, so ``connect({MODE: 'mainnet', URL})`` can spawn, message, read
results and dry-run against a node.

What aoconnect 0.0.98 sends (read from its source and @permaweb/ao-core-libs): every call but the
address is a POST whose body is a signed ANS-104 data item (``Content-Type: application/ans104``,
``codec-device: ans104@1.0``); its tags are the call's parameters (the devices, ``signing-format``,
``accept-codec``/``require-codec``, the user's tags) with ``Data-Protocol=ao``, a ``Type`` and
``Variant=ao.N.1``, its target the process. Each item's signature is checked, as for legacy items. What
it reads back: the ``process`` header of a spawn, the ``slot`` of a message's JSON, the current slot as
text, and a result as ``{"raw": {Output, Messages, Spawns, Assignments, Error}}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from actorao._exceptions import InvalidMessage, Timeout
from actorao.ans104 import DataItem
from actorao.message import DATA_PROTOCOL, MAINNET_VARIANT, is_id

if TYPE_CHECKING:
    from actorao.http._app import AoHttpApi, Handler

PROCESS_DEVICE = "~process@1.0"


class AoCoreRoutes:
    def __init__(self, api: AoHttpApi) -> None:
        self.api = api
        self.node = api.node

    def routes(self, guard: Any) -> list[Route]:
        def route(path: str, handler: Handler, methods: list[str]) -> Route:
            return Route(path, guard(handler), methods=methods)

        return [
            route("/~meta@1.0/info/address", self.address, ["GET"]),
            route("/push", self.spawn, ["POST"]),
            route("/{pid}" + PROCESS_DEVICE + "/push", self.message, ["POST"]),
            route("/{pid}" + PROCESS_DEVICE + "/compute/results={slot}", self.result, ["GET", "POST"]),
            route("/{pid}/compute/results={slot}", self.result, ["GET", "POST"]),
            route("/{pid}/slot/current", self.current_slot, ["GET", "POST"]),
            route("/{pid}" + PROCESS_DEVICE + "/as=execution/{query:path}", self.dry_run, ["POST"]),
        ]

    async def _item(self, request: Request, *, required: bool = True) -> DataItem | None:
        """The signed data item a call carries, its signature checked."""
        body = await self.api._body(request)
        if not body:
            if required:
                raise InvalidMessage("body", "empty; expected a signed ANS-104 data item (application/ans104)")
            return None
        item = DataItem.parse(body)
        if self.api.verify:
            item.verify()
        return item

    @staticmethod
    def _process(request: Request) -> str:
        pid = str(request.path_params["pid"])
        if not is_id(pid):
            raise InvalidMessage("process", f"expected a 43-character process id, got {pid!r:.60}")
        return pid

    async def address(self, request: Request) -> Response:
        return PlainTextResponse(self.node.identity)

    async def spawn(self, request: Request) -> Response:
        item = await self._item(request)
        assert item is not None
        if item.tag("Type") != "Process":
            raise InvalidMessage("Tags['Type']", f"/push spawns: expected Type=Process, got {item.tag('Type')!r}")
        ack = await self.api._write(lambda: self._durable(item))
        return _json({"process": ack.process, "slot": ack.slot, "id": ack.id},
                     headers={"process": ack.process, "slot": str(ack.slot)})

    async def message(self, request: Request) -> Response:
        pid = self._process(request)
        item = await self._item(request)
        assert item is not None
        if item.tag("Type") != "Message":
            raise InvalidMessage("Tags['Type']", f"expected Type=Message, got {item.tag('Type')!r}")
        if item.target_id != pid:
            raise InvalidMessage("Target", f"the item targets {item.target_id!r}, not the path's process {pid}")
        ack = await self.api._write(lambda: self._durable(item))
        return _json({"slot": ack.slot, "id": ack.id, "process": ack.process},
                     headers={"slot": str(ack.slot), "id": ack.id})

    def _durable(self, item: DataItem) -> Any:
        outcome = self.node.post_item(item, verify=False)  # checked above
        assert not isinstance(outcome, str)
        try:
            return outcome.get(timeout=self.api.result_wait)
        except Timeout as exc:
            raise Timeout(f"not yet durable after {self.api.result_wait} s; push the same item again") from exc

    async def result(self, request: Request) -> Response:
        pid = self._process(request)
        await self._item(request, required=False)
        wanted = str(request.path_params["slot"])

        def read() -> bytes:
            if wanted.isdigit() and len(wanted) < 20:
                key = self.node.reads.key_at(pid, int(wanted))
            elif is_id(wanted):  # aoconnect passes `slot ?? message`
                key = self.node.result_key(wanted, pid)
            else:
                raise InvalidMessage("results", f"expected a slot or a message id, got {wanted!r:.60}")
            return self.node.raw_results([key], self.api.result_wait)[0]

        return _raw(await self.api._read(read))

    async def current_slot(self, request: Request) -> Response:
        pid = self._process(request)
        await self._item(request, required=False)
        return PlainTextResponse(str(await self.api._read(lambda: self.node.reads.head_slot(pid))))

    async def dry_run(self, request: Request) -> Response:
        """``as=execution/compute&Name=Value&...``: the message's tags ride in the path, its data and
        owner in the signed item."""
        pid = self._process(request)
        query = str(request.path_params["query"])
        head, _, pairs = query.partition("&")
        if head != "compute":
            raise InvalidMessage("path", f"expected as=execution/compute&..., got as=execution/{query!r:.60}")
        tags = []
        for pair in filter(None, pairs.split("&")):
            name, equals, value = pair.partition("=")
            if not equals or not name:
                raise InvalidMessage("path", f"expected Name=Value tags after compute, got {pair!r:.60}")
            tags.append((name, value))
        present = {name for name, _ in tags}
        tags += [(name, value) for name, value in
                 (("Data-Protocol", DATA_PROTOCOL), ("Type", "Message"), ("Variant", MAINNET_VARIANT))
                 if name not in present]
        item = await self._item(request)
        assert item is not None
        if item.target_id and item.target_id != pid:
            raise InvalidMessage("Target", f"the item targets {item.target_id!r}, not the path's process {pid}")
        try:
            data = item.data.decode()
        except UnicodeDecodeError:
            raise InvalidMessage("Data", "a dry-run's data must be UTF-8 text") from None
        raw = await self.api._read(
            lambda: self.node.dry_run_raw(pid, tags, data, owner=item.address, message_id=item.id,
                                          timeout=self.api.result_wait))
        return _raw(raw)


def _json(doc: Any, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(doc), 200, headers, media_type="application/json")


def _raw(result: bytes) -> Response:
    """A result as AO-Core's JSON answers carry it, under ``raw``."""
    return Response(b'{"raw":' + result + b"}", 200, media_type="application/json")
