"""Mailboxes: ZeroMQ sockets with batching and high-water marks, and the nonce-ordered inbox."""

from __future__ import annotations

from actorao.mailbox._framing import (
    ACKS,
    ASSIGN,
    ASSIGNED,
    DIGEST,
    DRY_RESULT,
    DRY_RUN,
    EVICT,
    EVICTED,
    READY,
    REQUEST,
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
    acks_address,
    feed_address,
    listen,
    open_socket,
    results_address,
    runtime_dir,
    shard_address,
    worker_address,
)

__all__ = [
    "ACKS",
    "ASSIGN",
    "ASSIGNED",
    "DEFAULT_HIGH_WATER_MARK",
    "DIGEST",
    "DRY_RESULT",
    "DRY_RUN",
    "EVICT",
    "EVICTED",
    "READY",
    "REQUEST",
    "RESULTS",
    "STOP",
    "WAKE",
    "NonceInbox",
    "Outlet",
    "acks_address",
    "feed_address",
    "listen",
    "open_socket",
    "pack",
    "results_address",
    "runtime_dir",
    "shard_address",
    "unpack",
    "worker_address",
]
