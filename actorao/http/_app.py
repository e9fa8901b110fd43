"""AO's HTTP API over a Node: the MU's, SU's and CU's legacynet routes, the slice of a gateway's
GraphQL that aoconnect asks, and the AO-Core paths its mainnet mode calls (``_core``), on one port.

Every error leaves as a status and a JSON body ``{"error": ..., "field": ...}`` naming the problem;
no stack trace ever does. Node calls block (an assignment waits for its fsync), so each runs on
Starlette's thread pool and the event loop only moves bytes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from actorao._exceptions import (
    ActoraoError,
    InvalidMessage,
    ModuleError,
    NodeStopped,
    Overloaded,
    SignatureError,
    StoreFull,
    Timeout,
    UnknownMessage,
    UnknownProcess,
)
from actorao.ans104 import DataItem
from actorao.dashboard import CountResponses, Dashboard
from actorao.http._core import AoCoreRoutes
from actorao.http._gateway import Gateway
from actorao.http._views import LogBounds, LogView, ResultsQuery, parse_results_bound
from actorao.message import is_id, normalize_tags
from actorao.node import Ack, Node

log = logging.getLogger(__name__)

T = TypeVar("T")

SMALL_BODY = 256 * 1024  # a GraphQL query or a dry-run message
RETRY_AFTER_S = 1
# Blocking work runs on two thread pools: reads that may wait (for an evaluation, for a memory
# copy) cannot take every thread and starve the posts that would let them finish.
WRITE_THREADS = 64
READ_THREADS = 32
STATE_CHUNK = 1 << 20  # memory bytes a state read moves at a time
_WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")
_NONCE = re.compile(r"-?[0-9]{1,19}")


class Pace:
    """Keeps a stream to ``rate`` bytes a second: after each send it sleeps until the bytes sent so
    far are due. The clock and the sleep are injected, so a test counts the sleeps."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.started = clock()
        self.total = 0

    async def sent(self, size: int) -> None:
        self.total += size
        ahead = self.started + self.total / self.rate - self.clock()
        if ahead > 0:
            await self.sleep(ahead)


class BodyTooLarge(ActoraoError):
    """A request body over the server's limit."""


def json_response(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status, headers, media_type="application/json")


def raw_json(body: bytes, status: int = 200) -> Response:
    return Response(body, status, media_type="application/json")


def error_response(exc: Exception) -> Response:
    """The status and JSON body for an error; anything unexpected is logged here and leaves as a
    bare 500 naming no internals."""
    status, headers = 500, None
    doc: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, InvalidMessage):
        status, doc["field"] = 400, exc.field
    elif isinstance(exc, SignatureError):
        status = 401
    elif isinstance(exc, (UnknownProcess, UnknownMessage)):
        status = 404
    elif isinstance(exc, BodyTooLarge):
        status = 413
    elif isinstance(exc, ModuleError):
        status = 422
    elif isinstance(exc, (Overloaded, NodeStopped)):
        status, headers = 503, {"Retry-After": str(RETRY_AFTER_S)}
    elif isinstance(exc, Timeout):
        status = 504
    elif isinstance(exc, StoreFull):
        status = 507  # Insufficient Storage
    elif isinstance(exc, HTTPException):
        status, doc = exc.status_code, {"error": exc.detail}
    else:
        log.error("unexpected error serving a request", exc_info=exc)
        doc = {"error": "internal error; the node's log has the details"}
    doc["status"] = status
    return json_response(doc, status, headers)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler, node: Node) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            node.check_open()
            return await handler(request)
        except Exception as exc:  # the edge: every error becomes a status and a JSON body
            if not isinstance(exc, ActoraoError):
                try:
                    node.check_open()
                except NodeStopped as stopped:  # the node closed under this request
                    return error_response(stopped)
            return error_response(exc)

    guarded.__name__ = handler.__name__
    return guarded


def _int_param(request: Request, name: str, default: int | None, *, low: int = 0, high: int = 1 << 63) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not _WHOLE_NUMBER.fullmatch(text):
        raise InvalidMessage(name, f"expected a whole number, got {text!r:.40}")
    return min(max(int(text), low), high)


def _nonce_param(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    if not _NONCE.fullmatch(text):
        raise InvalidMessage(name, f"expected a nonce (a whole number, -1 for before the process), got {text!r:.40}")
    return int(text)


def _process_param(request: Request, required: bool = True) -> str | None:
    pid = request.query_params.get("process-id")
    if pid is None and not required:
        return None
    if pid is None or not is_id(pid):
        raise InvalidMessage("process-id", f"expected a 43-character process id, got {pid!r:.60}")
    return pid


def _path_id(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if not is_id(value):
        raise InvalidMessage(name, f"expected a 43-character base64url id, got {value!r:.60}")
    return value


def _sort_param(request: Request) -> bool:
    """True for ascending (the default)."""
    sort = request.query_params.get("sort", "ASC").upper()
    if sort not in ("ASC", "DESC"):
        raise InvalidMessage("sort", f"expected ASC or DESC, got {sort!r:.20}")
    return sort == "ASC"


class AoHttpApi:
    """The routes, bound to one node."""

    def __init__(
        self,
        node: Node,
        *,
        verify: bool | None = None,
        max_body: int | None = None,
        result_wait: float | None = None,
        public_url: str = "",
        max_buffered_bodies: int | None = None,
        state_reads: int | None = None,
        state_bytes_per_second: int | None = None,
    ) -> None:
        """Options left None take the node's ``NodeConfig``."""
        config = node.config
        self.node = node
        self.verify = config.verify if verify is None else verify
        self.max_body = config.max_body if max_body is None else max_body
        self.result_wait = config.result_wait if result_wait is None else result_wait
        self.public_url = public_url or config.public_url or ""
        self.max_buffered = config.max_buffered_bodies if max_buffered_bodies is None else max_buffered_bodies
        self.buffered = 0  # body bytes held by requests in flight; the event loop alone changes it
        self.views = LogView(node)
        self.gateway = Gateway(node, lambda: self.public_url)
        self._writes = anyio.CapacityLimiter(WRITE_THREADS)
        self._reads = anyio.CapacityLimiter(READ_THREADS)
        self.state_reads = config.state_reads if state_reads is None else state_reads
        self.state_rate = config.state_bytes_per_second if state_bytes_per_second is None else state_bytes_per_second
        self._states = anyio.Semaphore(self.state_reads)

    async def _write(self, call: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(call, limiter=self._writes)

    async def _read(self, call: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(call, limiter=self._reads)

    def routes(self) -> list[Route]:
        def g(handler: Handler) -> Handler:
            return _guarded(handler, self.node)

        return [
            Route("/", g(self.su_root), methods=["GET"]),
            Route("/", g(self.mu_post), methods=["POST"]),
            Route("/monitor/{pid}", g(self.monitor), methods=["POST", "DELETE"]),
            Route("/timestamp", g(self.timestamp), methods=["GET"]),
            Route("/processes/{pid}", g(self.process), methods=["GET"]),
            Route("/dry-run", g(self.dry_run), methods=["POST"]),
            Route("/result/{message}", g(self.result), methods=["GET"]),
            Route("/results/{pid}", g(self.results), methods=["GET"]),
            Route("/state/{pid}", g(self.state), methods=["GET"]),
            Route("/cron/{pid}", g(self.cron), methods=["GET"]),
            Route("/graphql", g(self.graphql), methods=["POST"]),
            Route("/actorao/status", g(self.status), methods=["GET"]),
            Route("/actorao/tree", g(self.tree), methods=["GET"]),
            *AoCoreRoutes(self).routes(g),  # aoconnect's mainnet mode (AO-Core paths)
            Route("/{pid}/latest", g(self.latest), methods=["GET"]),
            Route("/{id}", g(self.su_get), methods=["GET"]),
        ]

    async def _body(self, request: Request, limit: int | None = None) -> bytes:
        """The request body, refused with 413 as soon as it passes the limit: by its declared
        Content-Length, or while streaming when it declares none."""
        limit = self.max_body if limit is None else min(limit, self.max_body)
        declared = request.headers.get("content-length")
        if declared is not None and _WHOLE_NUMBER.fullmatch(declared) and int(declared) > limit:
            raise BodyTooLarge(f"body of {declared} bytes is over this route's limit of {limit}")
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                self.buffered += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"body over this route's limit of {limit} bytes")
                if self.buffered > self.max_buffered:
                    raise Overloaded(f"the node is buffering {self.buffered} bytes of request bodies, over its cap "
                                     f"of {self.max_buffered} (max_buffered_bodies); send it again later")
                parts.append(chunk)
            return b"".join(parts)
        finally:
            self.buffered -= size

    # -- MU -------------------------------------------------------------------------------------
    async def mu_post(self, request: Request) -> Response:
        """A signed data item (a message, a spawn, a module), or ``?process-id=&assign=``."""
        if "assign" in request.query_params:
            return await self._assign(request)
        body = await self._body(request)
        if not body:
            raise InvalidMessage("body", "empty; expected a signed ANS-104 data item (application/octet-stream)")

        def post() -> dict[str, Any]:
            outcome = self.node.post_item(body, verify=self.verify)
            if isinstance(outcome, str):  # a module or data: stored
                return {"id": outcome, "message": "Stored"}
            try:
                ack: Ack = outcome.get(timeout=self.result_wait)
            except Timeout as exc:  # queued, and will be assigned: a retry of the same item is safe
                raise Timeout(f"not yet durable after {self.result_wait} s; post the same item again to "
                              "learn its slot") from exc
            return {"id": ack.id, "message": "Processing DataItem", "process": ack.process, "slot": ack.slot,
                    "timestamp": ack.timestamp}

        return json_response(await self._write(post), 202)

    async def _assign(self, request: Request) -> Response:
        pid = _process_param(request)
        assert pid is not None
        message = request.query_params.get("assign", "")
        if not is_id(message):
            raise InvalidMessage("assign", f"expected a 43-character message id, got {message!r:.60}")
        if request.query_params.get("base-layer") is not None:
            raise InvalidMessage("base-layer", "this node has no base layer (Arweave) to assign from; "
                                 "assign messages that are on this node")
        exclude = request.query_params.get("exclude")
        if exclude:
            raise InvalidMessage("exclude", "excluding fields of an assigned message is not supported")
        ack = await self._write(lambda: self.node.assign(pid, message))
        return json_response({"id": ack.id, "message": "Processing Assignment", "process": ack.process,
                              "slot": ack.slot}, 202)

    async def monitor(self, request: Request) -> Response:
        """Cron: this node runs every process's Cron-Interval from its spawn, so monitoring is
        acknowledged once the process is known to have one."""
        pid = _path_id(request, "pid")
        body = await self._body(request, SMALL_BODY)
        if body:  # aoconnect signs a monitor item targeting the process: checked like any other item
            item = DataItem.parse(body)
            if self.verify:
                item.verify()
            if item.target_id != pid:
                raise InvalidMessage("Target", f"the monitor item targets {item.target_id!r}, not {pid}")
        if not self.node.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")
        tags = self.views.process_tags(pid)
        interval = dict(tags).get("Cron-Interval")
        if interval is None:
            raise InvalidMessage("Tags['Cron-Interval']", f"process {pid} has no Cron-Interval; there is no cron to "
                                 "monitor")
        verb = "monitoring" if request.method == "POST" else "cron stays on while the node runs"
        return json_response({"id": pid, "message": f"{verb}: every {interval}"})

    # -- SU -------------------------------------------------------------------------------------
    async def su_root(self, request: Request) -> Response:
        return json_response({"timestamp": int(time.time() * 1000), "address": self.node.identity,
                              "processes": len(self.node.processes()),
                              "schedulers": [{"address": address, "key": key}
                                             for address, key in self.node.scheduler_keys().items()]})

    async def timestamp(self, request: Request) -> Response:
        return json_response({"timestamp": int(time.time() * 1000), "block_height": 0})

    async def process(self, request: Request) -> Response:
        pid = _path_id(request, "pid")
        return json_response(await self._read(lambda: self.views.process(pid)))

    async def latest(self, request: Request) -> Response:
        pid = _path_id(request, "pid")
        return json_response(await self._read(lambda: self.views.latest(pid)))

    async def su_get(self, request: Request) -> Response:
        """``/{msg}?process-id=`` is one message; ``/{pid}?from&to&limit`` a page of a process's log, by
        timestamp, or by nonce with ``from-nonce``/``to-nonce``, as ao's SU pages."""
        item = _path_id(request, "id")
        pid = _process_param(request, required=False)
        if pid is not None:
            return json_response(await self._read(lambda: self.views.message(item, pid)))
        params = request.query_params
        if params.get("from-nonce") or params.get("to-nonce"):
            bounds = LogBounds(_nonce_param(request, "from-nonce"), _nonce_param(request, "to-nonce"), by_nonce=True)
        else:
            bounds = LogBounds(_int_param(request, "from", None), _int_param(request, "to", None))
        limit = _int_param(request, "limit", 100, low=1, high=1000)
        assert limit is not None
        return json_response(await self._read(lambda: self.views.page(item, bounds, limit)))

    # -- CU -------------------------------------------------------------------------------------
    async def result(self, request: Request) -> Response:
        message = _path_id(request, "message")
        pid = _process_param(request, required=False)

        def read() -> bytes:
            key = self.node.result_key(message, pid)
            return self.node.raw_results([key], self.result_wait)[0]

        return raw_json(await self._read(read))

    async def results(self, request: Request) -> Response:
        return await self._results_page(request, cron_only=False)

    async def cron(self, request: Request) -> Response:
        return await self._results_page(request, cron_only=True)

    async def _results_page(self, request: Request, *, cron_only: bool) -> Response:
        pid = _path_id(request, "pid")
        # ao's CU: 25 results a page by default, and cron pages 500 (at most 1000), always ascending
        limit = _int_param(request, "limit", 500 if cron_only else 25, low=1, high=1000)
        assert limit is not None
        query = ResultsQuery(parse_results_bound("from", request.query_params.get("from")),
                             parse_results_bound("to", request.query_params.get("to")), limit,
                             True if cron_only else _sort_param(request))

        def read() -> bytes:
            self.node.catch_up(pid, self.result_wait)  # like a CU, evaluate up to the latest first
            return self.views.results(pid, query, cron_only=cron_only)

        return raw_json(await self._read(read))

    async def dry_run(self, request: Request) -> Response:
        pid = _process_param(request)
        assert pid is not None
        body = await self._body(request, SMALL_BODY)
        try:
            doc = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage("body", f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidMessage("body", "expected a JSON object {Id, Target, Owner, Anchor, Data, Tags}")
        target = doc.get("Target", pid)
        if target != pid:
            raise InvalidMessage("Target", f"{target!r:.60} differs from process-id {pid}")
        data = doc.get("Data", "")
        if not isinstance(data, str):
            raise InvalidMessage("Data", f"must be text, got {type(data).__name__}")
        tags = normalize_tags(doc.get("Tags") or ())
        owner, message_id = doc.get("Owner"), doc.get("Id")
        anchor = doc.get("Anchor") or ""
        raw = await self._read(
            lambda: self.node.dry_run_raw(pid, tags, data, owner=owner, message_id=message_id, anchor=anchor,
                                          timeout=self.result_wait))
        return raw_json(raw)

    async def state(self, request: Request) -> Response:
        """The memory, streamed from the process's stored checkpoint a chunk at a time, at most
        ``state_reads`` at once and each at ``state_bytes_per_second``, with the headers ao's CU
        and its readers use."""
        pid = _path_id(request, "pid")
        if self._states.value == 0:
            raise Overloaded(f"{self.state_reads} state reads are already in flight (state_reads)")
        await self._states.acquire()
        try:
            state = await self._read(lambda: self.node.state_stream(pid, self.result_wait))
        except BaseException:
            self._states.release()
            raise
        chunks = state.chunks(STATE_CHUNK)
        pace = Pace(self.state_rate)

        async def body() -> AsyncIterator[bytes]:
            try:
                while (chunk := await self._read(lambda: next(chunks, None))) is not None:
                    yield chunk
                    await pace.sent(len(chunk))
            finally:
                self._states.release()

        headers = {"Content-Length": str(state.size), "Last-Ordinate": str(state.slot),
                   "Last-Timestamp": str(state.timestamp), "Last-Block-Height": str(state.block_height)}
        return StreamingResponse(body(), 200, headers, media_type="application/octet-stream")

    # -- gateway and node -----------------------------------------------------------------------
    async def graphql(self, request: Request) -> Response:
        body = await self._body(request, SMALL_BODY)
        return json_response(await self._read(lambda: self.gateway.execute(body)))

    async def status(self, request: Request) -> Response:
        return json_response(await self._read(self.node.status))

    async def tree(self, request: Request) -> Response:
        return json_response(await self._read(self.node.tree))


def create_app(node: Node, *, bind_host: str | None = None, bench_dir: str = "bench-results",
               **options: Any) -> Starlette:
    """An ASGI app serving AO's HTTP API for ``node``; see AoHttpApi for the options. ``bind_host``
    (default: the node's ``host``) decides whether /dashboard and /metrics need the admin token."""
    api = AoHttpApi(node, **options)
    dashboard = Dashboard(node, bind_host=node.config.host if bind_host is None else bind_host, bench_dir=bench_dir)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(exc if isinstance(exc, HTTPException) else HTTPException(404))

    # The dashboard's routes go first: AO's GET /{id} would take /dashboard and /metrics otherwise.
    app = Starlette(routes=dashboard.routes() + api.routes(), exception_handlers={404: not_found, 405: not_found},
                    middleware=[Middleware(CountResponses, metrics=dashboard.metrics)])
    app.state.api = api
    app.state.dashboard = dashboard
    return app
