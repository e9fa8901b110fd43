"""The ``actorao`` command: run a node (``node``, ``demo``), check a stopped one's processes against their
logs (``verify``), and talk to a running one over AO's HTTP API (``module add``, ``data add``, ``spawn``,
``send``, ``result``, ``dry-run``, ``state``, ``log``, ``tree``).

Every flag has an environment variable (shown in ``--help``); flags win. Client commands sign with
the wallet at ``--wallet``, generated there on first use.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import select
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from actorao import Ack, Future, _cpus, examples
from actorao._config import DEFAULT_WORKER_THREADS
from actorao._exceptions import ActoraoError
from actorao.http._server import http_url
from actorao.message import is_id
from actorao.node import Node, NodeConfig

DEFAULT_URL = "http://127.0.0.1:8734"
DEFAULT_WALLET = "~/.actorao/wallet.json"


_DEMO_WINDOW = 4  # batches sent and not yet acknowledged


def demo(config: NodeConfig, processes: int, messages: int, batch: int) -> int:
    """Spawn counters, send them messages in durable batches, wait for every result, check every count."""
    started = time.perf_counter()
    path = config.path
    with Node(config) as node:
        _keep_off_evaluation(node)
        earlier = len(node.processes())
        print(f"node at {path}: {node.workers} workers{_where(node)}, {earlier} processes already there, "
              f"up in {time.perf_counter() - started:.2f} s")
        pids = [node.spawn(examples.wasm("counter"), {"Name": f"counter-{i}"}) for i in range(processes)]
        print(f"spawned {processes} counter processes")
        sent = dict.fromkeys(pids, 0)
        acks: list[Ack] = []
        in_flight: collections.deque[Future[list[Ack]]] = collections.deque()
        t0 = time.perf_counter()

        def acknowledged(future: Future[list[Ack]]) -> None:
            acks.extend(future.get(timeout=300))
            rate = len(acks) / (time.perf_counter() - t0)
            print(f"\r  acknowledged {len(acks):>7}/{messages}  {rate:>9,.0f} durable msgs/s", end="", flush=True)

        for start in range(0, messages, batch):  # a few batches in flight: the SU commits one as the next is sent
            chunk = [(pids[i % processes], {"Action": "Inc"}, "") for i in range(start, min(start + batch, messages))]
            in_flight.append(node.send_many_nowait(chunk))
            for pid, _, _ in chunk:
                sent[pid] += 1
            if len(in_flight) >= _DEMO_WINDOW:
                acknowledged(in_flight.popleft())
        while in_flight:
            acknowledged(in_flight.popleft())
        results = node.results(acks, timeout=300)
        elapsed = time.perf_counter() - t0
        print(f"\nall {messages} results in {elapsed:.2f} s: {messages / elapsed:,.0f} msgs/s from send to result")
        failed = [result.error for result in results if not result.ok]
        wrong = [pid for pid in pids if node.dry_run(pid, {"Action": "Get"}).output != str(sent[pid])]
    if failed or wrong:
        print(f"FAILED: {len(failed)} error results, {len(wrong)} counters off, e.g. {(failed or wrong)[0]}")
        return 1
    print(f"check: every one of the {processes} counters holds exactly what it was sent")
    return 0


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name, default)


def _node_config(args: argparse.Namespace) -> NodeConfig:
    """The node's settings: its defaults, then ACTORAO_* variables, then the flags given."""
    flags = ("path", "workers", "worker_threads", "schedulers", "host", "port", "verify", "max_body", "public_url",
             "admin_token", "transport", "ray", "ray_worker_path", "evaluation_cpus")
    return NodeConfig.from_env(**{name: getattr(args, name, None) for name in flags})


def _where(node: Node) -> str:
    """``evaluating on CPU 1, the rest on 0``, for a status line, when evaluation_cpus is set."""
    if node.control_cpus is None or node.config.evaluation_cpus is None:
        return ""
    evaluation, control = _cpus.spelled(node.config.evaluation_cpus), _cpus.spelled(node.control_cpus)
    return f" evaluating on CPU {evaluation}, the rest on {control}"


def _keep_off_evaluation(node: Node) -> None:
    """With evaluation_cpus set, this whole process (its HTTP server, the demo's sending and waiting
    threads) runs on the other CPUs, as the node's own threads do."""
    _cpus.pin(node.control_cpus or ())


def verify(config: NodeConfig, pids: Sequence[str]) -> int:
    """Replay each process (every one, when none is named) from its log alone and print one line for
    each: ok, or the first slot that differs. Non-zero when any differs."""
    failed = 0
    with Node(config) as node:
        for pid in pids or node.processes():
            try:
                report = node.verify(pid)
            except ActoraoError as exc:
                print(f"actorao verify: {pid}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(report.summary(), flush=True)
            failed += not report.ok
    return 1 if failed else 0


# -- the node ---------------------------------------------------------------------------------------
def run_node(args: argparse.Namespace) -> int:
    """A node with AO's HTTP API in the foreground, and a live status line on stderr."""
    from actorao.http import serve_forever

    config = _node_config(args)
    with Node(config) as node:
        _keep_off_evaluation(node)
        url = http_url(config.host, config.port)
        print(f"actorao node {node.identity} at {config.path}: {node.workers} workers{_where(node)}, "
              f"{len(node.processes())} processes; AO HTTP API on {url}, dashboard on {url}/dashboard "
              f"(signatures {'verified' if config.verify else 'NOT verified'})", file=sys.stderr, flush=True)
        stop = threading.Event()
        status = threading.Thread(target=_status_line, args=(node, stop), name="status", daemon=True)
        status.start()
        try:
            serve_forever(node, public_url=config.public_url or url)
        finally:
            stop.set()
            status.join(2.0)
            print(file=sys.stderr)
    return 0


def _status_line(node: Node, stop: threading.Event) -> None:
    """Processes, messages/s and worker health, redrawn each second on a terminal (each 10 s as a
    line of its own otherwise)."""
    tty = sys.stderr.isatty()
    every = 1.0 if tty else 10.0
    last_assigned, last_evaluated, last_time = 0, 0, time.monotonic()
    while not stop.wait(every):
        try:
            status = node.status()
        except ActoraoError:
            continue
        now = time.monotonic()
        assigned, evaluated = status["assigned"], status["evaluated"]
        rate_in = (assigned - last_assigned) / (now - last_time)
        rate_out = (evaluated - last_evaluated) / (now - last_time)
        last_assigned, last_evaluated, last_time = assigned, evaluated, now
        line = (f"{status['processes']} processes | {rate_in:,.0f} assigned/s, {rate_out:,.0f} evaluated/s | "
                f"{assigned:,} assigned, {evaluated:,} evaluated | workers {status['workers_running']}/"
                f"{status['workers']} up, {status['restarts']} restarts")
        print(f"\r{line:<110}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)


# -- talking to a running node ----------------------------------------------------------------------
class Client:
    """The few HTTP calls the CLI makes, with the node's JSON errors turned into ActoraoError."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def call(self, method: str, path: str, body: bytes | None = None, *, content_type: str = "application/json",
             query: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        target = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(target, data=body, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            detail = exc.read()
            try:
                message = orjson.loads(detail).get("error", detail.decode(errors="replace"))
            except orjson.JSONDecodeError:
                message = detail.decode(errors="replace")
            raise ActoraoError(f"{method} {path}: {exc.code}: {message}") from None
        except urllib.error.URLError as exc:
            raise ActoraoError(f"cannot reach a node at {self.url}: {exc.reason}") from None

    def json(self, method: str, path: str, body: bytes | None = None, **options: Any) -> Any:
        return orjson.loads(self.call(method, path, body, **options)[0])


def _signer(path: str) -> Any:
    from actorao import ans104

    wallet = Path(path).expanduser()
    if not wallet.exists():
        print(f"generating a wallet at {wallet} ...", file=sys.stderr, flush=True)
        wallet.parent.mkdir(parents=True, exist_ok=True)
        ans104.save_jwk(ans104.RsaSigner.generate(), wallet)
    return ans104.load_jwk(wallet)


def _tags(pairs: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ActoraoError(f"--tag {pair!r}: expected NAME=VALUE")
        out.append((name, value))
    return out


def _post_item(
    client: Client, signer: Any, data: bytes | str, tags: list[tuple[str, str]], target: str | None = None
) -> Any:
    from actorao import ans104

    item = ans104.create_data_item(signer, data, tags, target=target)
    return client.json("POST", "/", item.to_bytes(), content_type="application/octet-stream")


def _print(doc: Any) -> None:
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


def run_client(args: argparse.Namespace) -> int:
    client = Client(args.url)
    command = args.command
    ao = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1")]
    if command == "module":
        wasm = Path(args.file).read_bytes()
        # The tags an ao module carries, so that aoconnect and the aos CLI can spawn it: its format is
        # recognised from the binary (memory64, its imports) unless --format names it.
        from actorao.vm import compile_module

        module_format = args.format or compile_module(wasm).format
        tags = [*ao, ("Type", "Module"), ("Module-Format", module_format), ("Input-Encoding", "JSON-1"),
                ("Output-Encoding", "JSON-1"), ("Memory-Limit", args.memory_limit),
                ("Compute-Limit", args.compute_limit)]
        _print(_post_item(client, _signer(args.wallet), wasm, tags + _tags(args.tag)))
    elif command == "data":
        # A signed upload with no ao Type: the node stores it for WeaveDrive (/data/<its id>)
        _print(_post_item(client, _signer(args.wallet), Path(args.file).read_bytes(), _tags(args.tag)))
    elif command == "spawn":
        scheduler = client.json("GET", "/")["address"]
        given = _tags(args.tag)
        # aos trusts messages one process sends another only from an Authority: the node pushes them
        authority = [] if any(n == "Authority" for n, _ in given) else [("Authority", scheduler)]
        tags = [*ao, ("Type", "Process"), ("Module", args.module), ("Scheduler", scheduler), *authority, *given]
        _print(_post_item(client, _signer(args.wallet), args.data or " ", tags))
    elif command == "send":
        tags = ao + [("Type", "Message")] + ([("Action", args.action)] if args.action else []) + _tags(args.tag)
        ack = _post_item(client, _signer(args.wallet), args.data or " ", tags, target=args.process)
        _print(ack)
        if args.wait:
            _print(client.json("GET", f"/result/{ack['id']}", query={"process-id": args.process}))
    elif command == "result":
        _print(client.json("GET", f"/result/{args.message}", query={"process-id": args.process}))
    elif command == "dry-run":
        tags = ([("Action", args.action)] if args.action else []) + _tags(args.tag)
        owner = args.owner or _signer(args.wallet).address  # asked as this wallet, unless told otherwise
        body = {"Target": args.process, "Owner": owner, "Data": args.data,
                "Tags": [{"name": n, "value": v} for n, v in tags]}
        _print(client.json("POST", "/dry-run", orjson.dumps(body), query={"process-id": args.process}))
    elif command == "state":
        memory, headers = client.call("GET", f"/state/{args.process}")
        Path(args.output).write_bytes(memory)
        slot = headers.get("Last-Ordinate", headers.get("last-ordinate", "?"))
        print(f"{len(memory):,} bytes of memory after slot {slot} written to {args.output}")
    elif command == "log":
        _print(client.json("GET", f"/{args.process}", query={"from-nonce": args.from_, "to-nonce": args.to,
                                                                "limit": args.limit}))
    elif command == "tree":
        if args.path:
            with Node(_node_config(args)) as node:
                _print(node.tree())
        else:
            _print(client.json("GET", "/actorao/tree"))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, except that a 43-character id is always a value: one in 64 ids starts with "-", and
    argparse would read it as an unknown option (``actorao send -Xy…``)."""

    def _parse_optional(self, arg_string: str) -> Any:
        if len(arg_string) == 43 and arg_string.startswith("-") and is_id(arg_string):
            return None
        return super()._parse_optional(arg_string)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="actorao", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    def data_path(sub: argparse.ArgumentParser, default: str | None = ".actorao") -> None:
        sub.add_argument("--path", default=_env("ACTORAO_PATH", default),
                         help=f"the node's data folder (env ACTORAO_PATH; default: {default})")
        sub.add_argument("--workers", type=int, default=None,
                         help="CU worker processes (env ACTORAO_WORKERS; default: one per core)")
        sub.add_argument("--worker-threads", type=int, default=None,
                         help="evaluation threads of each worker: this many long messages at once before its "
                              f"other processes wait (env ACTORAO_WORKER_THREADS; default: {DEFAULT_WORKER_THREADS})")
        sub.add_argument("--schedulers", type=int, default=None,
                         help="scheduler shard processes (env ACTORAO_SCHEDULERS; default: one per 4 cores)")
        sub.add_argument("--evaluation-cpus", default=None, metavar="CPUS",
                         help="run the workers' evaluation threads on these CPUs (2,3 or 4-7) and every other "
                              "thread of the node on the rest: shorter serial round trips, fewer cores "
                              "evaluating (env ACTORAO_EVALUATION_CPUS; default: the kernel places all)")
        sub.add_argument("--transport", choices=("ipc", "tcp"), default=None,
                         help="how the node reaches its workers: ipc, or tcp with CURVE and the cluster key "
                              "in the data folder (env ACTORAO_TRANSPORT; default: ipc)")
        sub.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                         help="run the CU workers as Ray actors on the Ray cluster at ADDRESS (auto, ray://..., "
                              "or local: a Ray of the node's own; needs actorao[ray]; env ACTORAO_RAY)")
        sub.add_argument("--ray-worker-path", default=None, metavar="FOLDER",
                         help="where each Ray-placed worker keeps its own store, on its machine (env "
                              "ACTORAO_RAY_WORKER_PATH; default: that machine's temporary folder)")

    run_demo = commands.add_parser("demo", help="run the counter demo workload on a node")
    data_path(run_demo)
    run_demo.add_argument("--processes", type=int, default=100)
    run_demo.add_argument("--messages", type=int, default=20_000)
    run_demo.add_argument("--batch", type=int, default=1000, help="messages per send_many")

    check = commands.add_parser(
        "verify", help="replay processes from their logs alone (a fresh instance, no checkpoint) and check every "
        "slot's hash-chain link, every stored result and the final memory hash; exits 1 on any mismatch")
    data_path(check)
    check.add_argument("process", nargs="*", help="the processes to verify (default: every one)")

    node = commands.add_parser("node", help="run a node serving AO's HTTP API, with a live status line")
    data_path(node)
    defaults = NodeConfig()
    node.add_argument("--host", default=None,
                      help=f"address to listen on (env ACTORAO_HOST; default: {defaults.host}, this machine only)")
    node.add_argument("--port", type=int, default=None, help=f"port (env ACTORAO_PORT; default: {defaults.port})")
    node.add_argument("--no-verify", dest="verify", action="store_const", const=False, default=None,
                      help="accept data items without checking signatures (env ACTORAO_VERIFY=0)")
    node.add_argument("--max-body", type=int, default=None,
                      help="largest request body in bytes (env ACTORAO_MAX_BODY; default: 64 MiB)")
    node.add_argument("--public-url", default=None,
                      help="the URL clients reach this node at, for its Scheduler-Location (env ACTORAO_PUBLIC_URL; "
                      "default: http://HOST:PORT)")
    node.add_argument("--admin-token", default=None,
                      help="the token /dashboard and /metrics ask for (env ACTORAO_ADMIN_TOKEN); without one they "
                      "are served on a loopback bind only")

    def client(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--url", default=_env("ACTORAO_URL", DEFAULT_URL),
                         help=f"the node's URL (env ACTORAO_URL; default: {DEFAULT_URL})")
        sub.add_argument("--wallet", default=_env("ACTORAO_WALLET", DEFAULT_WALLET),
                         help="Arweave JWK to sign with, made on first use "
                         f"(env ACTORAO_WALLET; default: {DEFAULT_WALLET})")
        sub.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE", help="a tag; repeatable")
        return sub

    module = client("module", "store a module on a node: actorao module add FILE")
    module.add_argument("verb", choices=["add"])
    module.add_argument("file", help="the WASM module")
    module.add_argument("--format", help="its Module-Format (default: recognised from the module)")
    module.add_argument("--memory-limit", default="1-gb", help="its Memory-Limit tag (default: 1-gb)")
    module.add_argument("--compute-limit", default=str(NodeConfig().compute_limit),
                        help="its Compute-Limit tag, in fuel (default: the node's default)")
    data = client("data", "store data for WeaveDrive on a node: actorao data add FILE; prints its id")
    data.add_argument("verb", choices=["add"])
    data.add_argument("file", help="the data (a GGUF model, say), up to the node's max_body")
    spawn = client("spawn", "spawn a process of a stored module; prints its id")
    spawn.add_argument("module", help="the module's id (from module add)")
    spawn.add_argument("--data", default="")
    send = client("send", "send a signed message to a process")
    send.add_argument("process")
    send.add_argument("--action", help="the Action tag")
    send.add_argument("--data", default="")
    send.add_argument("--wait", action="store_true", help="then print its result")
    result = client("result", "print a message's result")
    result.add_argument("message")
    result.add_argument("--process", help="the process, if the message was assigned to several")
    dry = client("dry-run", "evaluate a message on a process without keeping anything")
    dry.add_argument("process")
    dry.add_argument("--action", help="the Action tag")
    dry.add_argument("--data", default="")
    dry.add_argument("--owner", help="the Owner the message claims (default: your wallet's address)")
    state = client("state", "save a process's memory to a file")
    state.add_argument("process")
    state.add_argument("-o", "--output", default="state.bin")
    show_log = client("log", "print a page of a process's log (messages and assignments)")
    show_log.add_argument("process")
    show_log.add_argument("--from", dest="from_", type=int, default=-1,
                          help="after this slot (its nonce; default -1: from the spawn)")
    show_log.add_argument("--to", type=int, help="up to this slot")
    show_log.add_argument("--limit", type=int, default=100)
    tree = client("tree", "print a node's supervision tree as JSON (a running node's, or --path's)")
    data_path(tree, None)
    from actorao.bench import _run as bench

    bench.add_arguments(commands.add_parser(
        "bench", help="run the benchmark matrix; writes bench-results/<timestamp>/ (results.json, report.md, plots)"))

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        if args.command == "demo":
            return demo(_node_config(args), args.processes, args.messages, args.batch)
        if args.command == "verify":
            return verify(_node_config(args), args.process)
        if args.command == "node":
            return run_node(args)
        if args.command == "bench":
            return bench.main(args, argv)
        return run_client(args)
    except ActoraoError as exc:
        print(f"actorao {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if not _stdout_gone():  # another pipe (a node's connection, say): an error like any other
            raise
        _drop_stdout()  # whoever read the output has gone (``actorao demo | head -1``): stop, quietly
        return 128 + signal.SIGPIPE  # what a shell reports for a command that SIGPIPE ended


def _stdout_gone() -> bool:
    """Whether standard output's reader has gone: a pipe or socket with no reader polls as an error."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # replaced by something with no descriptor: not the pipe that broke
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _drop_stdout() -> None:
    """Point standard output at /dev/null: what is still buffered for the closed pipe, flushed as the
    interpreter exits, would raise once more there, with a traceback of its own."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, sys.stdout.fileno())
    finally:
        os.close(null)


if __name__ == "__main__":
    sys.exit(main())
