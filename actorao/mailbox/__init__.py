"""Mailboxes: ZeroMQ sockets with batching and high-water marks, and the nonce-ordered inbox."""

from __future__ import annotations

from actorao.mailbox._framing import (
    ASSIGN,
    DIGEST,
    DRY_RESULT,
    DRY_RUN,
    EVICT,
    EVICTED,
    READY,
    RESULTS,
    STOP,
    WAKE,
    pack,
    unpack,
)
from actorao.mailbox._inbox import NonceInbox
from actorao.mailbox._sockets import (
    DEFAULT_HIGH_WATER_MARK,
    Outlet,
    open_socket,
    results_address,
    runtime_dir,
    worker_address,
)

__all__ = [
    "ASSIGN",
    "DEFAULT_HIGH_WATER_MARK",
    "DIGEST",
    "DRY_RESULT",
    "DRY_RUN",
    "EVICT",
    "EVICTED",
    "READY",
    "RESULTS",
    "STOP",
    "WAKE",
    "NonceInbox",
    "Outlet",
    "open_socket",
    "pack",
    "results_address",
    "runtime_dir",
    "unpack",
    "worker_address",
]
