"""The dashboard's routes: the page and its static files, its JSON reads, the live samples as
server-sent events, bench runs, and ``/metrics``; all behind the admin gate."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from actorao._exceptions import ActoraoError, InvalidMessage, NodeStopped, UnknownProcess
from actorao.dashboard._metrics import Metrics
from actorao.dashboard._sampler import Sampler
from actorao.message import is_id

if TYPE_CHECKING:
    from actorao.node import Node

log = logging.getLogger(__name__)

COOKIE = "actorao_admin"
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
DATA_SHOWN = 4096  # characters of a message's Data a log page shows
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_BENCH_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}\.(png|md|json)")
_BENCH_TYPES = {"png": "image/png", "md": "text/plain; charset=utf-8", "json": "application/json"}

Handler = Callable[[Request], Awaitable[Response]]


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status, headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message, "status": status}, status, headers)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AdminGate:
    """Who may see the dashboard and /metrics. With a token, whoever shows it (``Authorization:
    Bearer``, the cookie the page sets, or ``?token=`` once); without one, only a loopback bind
    serves them."""

    def __init__(self, token: str | None, bind_host: str) -> None:
        self.token = token or None
        self.bind_host = bind_host

    def refusal(self, request: Request) -> Response | None:
        if self.token is None:
            if is_loopback(self.bind_host):
                # A page elsewhere could point a name of its own at 127.0.0.1 (DNS rebinding) and read
                # this with the browser's help: without a token, answer only requests for a loopback host.
                host = request.headers.get("host", "")
                name = host.rpartition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
                if not is_loopback(name):
                    return _error(403, f"the dashboard and /metrics answer only for a loopback host without an "
                                       f"admin token, not for Host {host!r} (start the node with --admin-token to "
                                       "reach it by other names)")
                return None
            return _error(403, f"the dashboard and /metrics are off: this node listens on {self.bind_host}, beyond "
                               "this machine, and has no admin token (start it with --admin-token or "
                               "ACTORAO_ADMIN_TOKEN)")
        offered = request.query_params.get("token") or request.cookies.get(COOKIE)
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            offered = header[len("bearer "):].strip()
        if offered is None:
            return _error(401, "this route needs the admin token: send 'Authorization: Bearer <token>', "
                               "or open /dashboard?token=<token>", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(offered.encode(), self.token.encode()):
            return _error(401, "the admin token is wrong", {"WWW-Authenticate": "Bearer"})
        return None


class Dashboard:
    """The routes, bound to one node."""

    def __init__(self, node: Node, *, bind_host: str, bench_dir: Path | str = "bench-results",
                 sampler: Sampler | None = None) -> None:
        self.node = node
        self.gate = AdminGate(node.config.admin_token, bind_host)
        self.metrics = Metrics(node)
        self.sampler = sampler or Sampler(node, on_latency=self.metrics.latency.observe)
        self.bench_dir = Path(bench_dir)
        self._names: dict[str, tuple[str, str]] = {}  # process -> (Name, module): fixed at spawn

    def routes(self) -> list[Route]:
        def g(handler: Handler) -> Handler:
            return self._guarded(handler)

        return [
            Route("/metrics", g(self.metrics_page), methods=["GET"]),
            Route("/dashboard", g(self.page), methods=["GET"]),
            Route("/dashboard/static/{name}", g(self.static), methods=["GET"]),
            Route("/dashboard/events", g(self.events), methods=["GET"]),
            Route("/dashboard/api/history", g(self.history), methods=["GET"]),
            Route("/dashboard/api/processes", g(self.processes), methods=["GET"]),
            Route("/dashboard/api/processes/{pid}", g(self.process), methods=["GET"]),
            Route("/dashboard/api/processes/{pid}/log", g(self.log_page), methods=["GET"]),
            Route("/dashboard/api/processes/{pid}/memory", g(self.memory), methods=["GET"]),
            Route("/dashboard/api/messenger", g(self.messenger), methods=["GET"]),
            Route("/dashboard/api/bench", g(self.bench_runs), methods=["GET"]),
            Route("/dashboard/bench/{run}/{file}", g(self.bench_file), methods=["GET"]),
        ]

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            refused = self.gate.refusal(request)
            if refused is not None:
                return refused
            try:
                self.node.check_open()
                if not self.sampler.running:
                    self.sampler.start()
                return await handler(request)
            except InvalidMessage as exc:
                return _json({"error": str(exc), "field": exc.field, "status": 400}, 400)
            except UnknownProcess as exc:
                return _error(404, str(exc))
            except NodeStopped as exc:
                return _error(503, str(exc))
            except ActoraoError as exc:
                return _error(500, str(exc))
            except Exception:  # the edge: logged here, and leaves as a bare 500 naming no internals
                log.exception("dashboard: %s %s failed", request.method, request.url.path)
                return _error(500, "internal error")

        guarded.__name__ = handler.__name__
        return guarded

    async def _read(self, call: Callable[[], Any]) -> Any:
        return await anyio.to_thread.run_sync(call)

    # -- the page -------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        html = resources.files("actorao.dashboard").joinpath("static/index.html").read_bytes()
        response = Response(html, media_type="text/html; charset=utf-8")
        token = request.query_params.get("token")
        if token is not None and self.gate.token is not None:  # the gate let it in: keep it for the page's calls
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return _error(404, f"no dashboard file {name!r}")
        body = resources.files("actorao.dashboard").joinpath(f"static/{name}").read_bytes()
        return Response(body, media_type=STATIC[name])

    async def metrics_page(self, request: Request) -> Response:
        body = await self._read(self.metrics.exposition)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- live samples ---------------------------------------------------------------------------
    async def history(self, request: Request) -> Response:
        return _json({"interval": self.sampler.interval, "samples": self.sampler.history()})

    async def events(self, request: Request) -> Response:
        sampler = self.sampler

        async def stream() -> AsyncIterator[bytes]:
            seq = 0
            yield b"retry: 2000\n\n"
            while sampler.running:
                sample = await anyio.to_thread.run_sync(sampler.after, seq, 1.0)
                if sample is None:
                    yield b": waiting\n\n"  # a comment: keeps proxies from closing an idle stream
                    continue
                seq = sample["seq"]
                yield b"event: sample\ndata: " + orjson.dumps(sample) + b"\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- processes ------------------------------------------------------------------------------
    def _name_and_module(self, pid: str) -> tuple[str, str]:
        found = self._names.get(pid)
        if found is None:
            try:
                tags = {tag["name"]: tag["value"] for tag in self.node.reads.spawn(pid).doc()["Tags"]}
                module = str(self.node.process_info(pid).get("module", tags.get("Module", "")))
            except ActoraoError:
                return "", ""  # not committed yet: asked again next time
            found = self._names[pid] = (tags.get("Name", ""), module)
        return found

    async def processes(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip().lower()
        worker = request.query_params.get("worker")
        limit = _whole(request, "limit", 100, high=1000)

        def search() -> dict[str, Any]:
            found: list[dict[str, Any]] = []
            total = 0
            for pid in self.node.processes():
                if worker is not None and f"worker-{self.node.worker_of(pid)}" != worker:
                    continue
                name, module = self._name_and_module(pid)
                if query and query not in pid.lower() and query not in name.lower() and query not in module.lower():
                    continue
                total += 1
                if len(found) < limit:
                    index = self.node.worker_of(pid)
                    found.append({"id": pid, "name": name, "module": module,
                                  "worker": None if index is None else f"worker-{index}"})
            return {"processes": found, "total": total}

        return _json(await self._read(search))

    def _known(self, request: Request) -> str:
        pid = request.path_params["pid"]
        if not is_id(pid) or not self.node.knows(pid):
            raise UnknownProcess(f"no process {pid} on this node")
        return str(pid)

    async def process(self, request: Request) -> Response:
        pid = self._known(request)

        def read() -> dict[str, Any]:
            reads = self.node.reads
            name, module = self._name_and_module(pid)
            results = []
            for entry in reads.results(pid, None, None, 10, False):
                doc = orjson.loads(entry.result)
                results.append({"slot": entry.slot, "timestamp": entry.timestamp, "cron": entry.cron,
                                "output": _shown(doc.get("Output")), "error": _shown(doc.get("Error")),
                                "messages": len(doc.get("Messages") or ()), "spawns": len(doc.get("Spawns") or ())})
            index = self.node.worker_of(pid)
            return {"id": pid, "name": name, "module": module, "head_slot": reads.head_slot(pid),
                    "scheduler": self.node.scheduler_of(pid), "worker": None if index is None else f"worker-{index}",
                    "latest_results": results,
                    "checkpoints": [{"slot": slot, "bytes": size} for slot, size in reads.checkpoints(pid)]}

        return _json(await self._read(read))

    async def log_page(self, request: Request) -> Response:
        pid = self._known(request)
        after = _whole(request, "after", -1, low=-1)
        limit = _whole(request, "limit", 20, low=1, high=200)

        def read() -> dict[str, Any]:
            entries, more = self.node.reads.log_page(pid, None if after < 0 else after, None, limit)
            shown = []
            for entry in entries:
                doc = entry.doc()
                shown.append({"slot": entry.slot, "id": doc.get("Id"), "from": doc.get("From"),
                              "timestamp": doc.get("Timestamp"), "cron": doc.get("Cron"),
                              "tags": [[tag["name"], tag["value"]] for tag in doc.get("Tags", ())],
                              "data": _shown(doc.get("Data"))})
            return {"entries": shown, "more": more}

        return _json(await self._read(read))

    async def memory(self, request: Request) -> Response:
        pid = self._known(request)
        state = await self._read(lambda: self.node.state_stream(pid, timeout=10.0))
        return _json({"bytes": state.size, "slot": state.slot})

    async def messenger(self, request: Request) -> Response:
        def read() -> dict[str, Any]:
            undelivered = self.node.undelivered()
            return {**self.node.messenger_status(), "undelivered_messages": undelivered[:50]}

        return _json(await self._read(read))

    # -- bench runs -----------------------------------------------------------------------------
    async def bench_runs(self, request: Request) -> Response:
        def read() -> list[dict[str, Any]]:
            if not self.bench_dir.is_dir():
                return []
            runs = []
            for run in sorted(self.bench_dir.iterdir(), reverse=True):
                if run.is_dir() and _RUN_NAME.fullmatch(run.name):
                    files = sorted(path.name for path in run.iterdir() if _BENCH_FILE.fullmatch(path.name))
                    runs.append({"run": run.name, "files": files})
            return runs

        return _json({"dir": str(self.bench_dir), "runs": await self._read(read)})

    async def bench_file(self, request: Request) -> Response:
        run, name = request.path_params["run"], request.path_params["file"]
        match = _BENCH_FILE.fullmatch(name)
        if not _RUN_NAME.fullmatch(run) or match is None:
            return _error(404, f"no bench file {run}/{name}")
        path = self.bench_dir / run / name
        if not path.is_file():
            return _error(404, f"no bench file {run}/{name} under {self.bench_dir}")
        return Response(await self._read(path.read_bytes), media_type=_BENCH_TYPES[match.group(1)])


def _shown(value: Any) -> Any:
    """A value as the page shows it: long text cut, with how long it was."""
    if isinstance(value, str) and len(value) > DATA_SHOWN:
        return value[:DATA_SHOWN] + f"… ({len(value)} characters)"
    if isinstance(value, (dict, list)):
        return _shown(orjson.dumps(value).decode())
    return value


def _whole(request: Request, name: str, default: int, *, low: int = 0, high: int = 1 << 62) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,19}", text) or not low <= int(text) <= high:
        raise InvalidMessage(name, f"must be a whole number from {low} to {high}, got {text!r}")
    return int(text)
