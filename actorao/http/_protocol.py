"""uvicorn's httptools protocol with read timeouts, as nginx counts them: a request's whole header
must arrive within ``header_timeout`` (from the connection, or from the end of the response before
it), and its body may pause no longer than ``body_timeout`` between two reads. A half-open request
gets a 408 and its connection is closed, so a client cannot hold sockets and buffers forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class TimedHttpProtocol(HttpToolsProtocol):
    header_timeout = 10.0
    body_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._in_body = False

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out, what)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self, what: str) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._in_body and self.flow is not None and self.flow.read_paused:
            # We stopped reading (the app has not taken what is buffered): not the client's pause.
            self._arm(self.body_timeout, what)
            return
        message = f"the request's {what} did not arrive in time; closing the connection".encode()
        log.info("closing a connection from %s: its %s timed out", self.client, what)
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's next receive() says the client left
            self.cycle.message_event.set()
        self.transport.close()

    # -- the protocol's events -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "header")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_body = False
        if self._read_timer is None:  # a keep-alive connection's next request: its first byte is here
            self._arm(self.header_timeout, "header")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._in_body = True
        self._arm(self.body_timeout, "body")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(self.body_timeout, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        self._disarm()


def timed_protocol(header_timeout: float, body_timeout: float) -> type[TimedHttpProtocol]:
    """The protocol class for one server's timeouts."""
    return type("TimedHttpProtocol", (TimedHttpProtocol,),
                {"header_timeout": header_timeout, "body_timeout": body_timeout})
