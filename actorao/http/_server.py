"""Serving the API with uvicorn: in the foreground (``actorao node``), or on a thread of its own
beside an embedding program (``HttpServer``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from typing import Any

import uvicorn
import uvloop

from actorao._exceptions import ActoraoError
from actorao.http._app import create_app
from actorao.http._protocol import timed_protocol
from actorao.node import Node

log = logging.getLogger(__name__)

def http_url(host: str, port: int) -> str:
    """How clients on this machine reach a server bound to ``host``: a wildcard bind is reached on
    loopback, and an IPv6 address goes in brackets."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(node: Node, host: str, port: int, **options: Any) -> uvicorn.Config:
    public_url = options.pop("public_url", "") or http_url(host, port)
    header_timeout = options.pop("header_timeout", None) or node.config.header_timeout
    body_timeout = options.pop("body_timeout", None) or node.config.body_timeout
    app = create_app(node, public_url=public_url, bind_host=host, **options)
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
        loop="uvloop", http=timed_protocol(header_timeout, body_timeout), timeout_graceful_shutdown=5,
    )


class HttpServer:
    """AO's HTTP API for ``node`` on a background thread, bound to 127.0.0.1 by default. Port 0
    picks a free port; ``url`` says which."""

    def __init__(self, node: Node, host: str | None = None, port: int | None = None, **options: Any) -> None:
        host = node.config.host if host is None else host
        port = node.config.port if port is None else port
        # proto=IPPROTO_TCP matters: the event loop sets TCP_NODELAY on accepted connections only for
        # sockets that say they are TCP, and without it each keep-alive response waits 40 ms on
        # Nagle and delayed ACKs.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ActoraoError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.host, self.port = host, self._socket.getsockname()[1]
        self.url = http_url(host, self.port)
        options.setdefault("public_url", self.url)
        self._server = uvicorn.Server(_config(node, host, self.port, **options))
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._server.serve(sockets=[self._socket]))

    def start(self, timeout: float = 10.0) -> HttpServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ActoraoError(f"the HTTP server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10.0)
        self._socket.close()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(node: Node, host: str | None = None, port: int | None = None, **options: Any) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, then return so the caller closes the node.
    uvicorn stops on either and re-raises it once it has stopped: the handlers set here make that
    re-raise a no-op instead of killing the process before the node is closed cleanly. Host, port and
    options left out take the node's ``NodeConfig``."""
    host = node.config.host if host is None else host
    port = node.config.port if port is None else port
    server = uvicorn.Server(_config(node, host, port, **options))
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ActoraoError(f"could not serve on {host}:{port} (is the port taken?)")
