"""ZeroMQ ipc sockets between the node and its workers, with high-water marks.

The node binds its sockets (their addresses outlive worker restarts); workers connect. Each worker
has a PULL inbox fed by one PUSH of the node's; every worker PUSHes to one PULL of the node's. Each
scheduler shard binds a PULL for the node's requests and PUSHes its answers to one PULL of the node's.
Each worker also binds a PULL feed, to which every shard connects a PUSH: a commit's assignments go
from the shard straight to the workers of their processes, with no hop through the node.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import zmq

from actorao.mailbox._framing import pack
from actorao.mailbox._transport import ClusterKey, secure

log = logging.getLogger(__name__)

DEFAULT_HIGH_WATER_MARK = 1_000  # frames; each frame is a batch
_IPC_PATH_MAX = 100  # sun_path holds 108 bytes on Linux


def runtime_dir(data_path: str | Path, run: str) -> Path:
    """The folder for one run's ipc sockets: ``<data>/run/<run>``, or a short folder in /tmp named
    after it when that path is too long for a unix socket address. A fresh folder per run means a
    worker left over from an earlier run can never connect to this run's sockets."""
    folder = Path(data_path).resolve() / "run" / run
    if len(str(folder)) + len("/worker-999.ipc") > _IPC_PATH_MAX:
        tag = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / f"actorao-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def worker_address(folder: Path, index: int) -> str:
    return f"ipc://{folder}/worker-{index}.ipc"


def feed_address(folder: Path, index: int) -> str:
    """Where worker ``index`` takes assignments straight from the scheduler shards."""
    return f"ipc://{folder}/feed-{index}.ipc"


def results_address(folder: Path) -> str:
    return f"ipc://{folder}/results.ipc"


def shard_address(folder: Path, index: int) -> str:
    """Where scheduler shard ``index`` takes requests."""
    return f"ipc://{folder}/shard-{index}.ipc"


def acks_address(folder: Path) -> str:
    """Where the node hears its shards: acknowledgements, and each commit's assignments."""
    return f"ipc://{folder}/acks.ipc"


def listen(
    socket: zmq.Socket[bytes], stopped: threading.Event, on_frame: Callable[[bytes], None],
    after: Callable[[], None], name: str, poll_ms: int = 50,
) -> None:
    """Until ``stopped``: hand each waiting frame to ``on_frame``, then call ``after``, every poll
    (at least each ``poll_ms``). A failure of either is logged and listening goes on: one bad frame
    must not stop every later one."""
    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    while not stopped.is_set():
        if poller.poll(poll_ms):
            while True:
                try:
                    frame = socket.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    on_frame(frame)
                except Exception:
                    log.exception("the %s could not handle a frame", name)
        try:
            after()
        except Exception:
            log.exception("the %s failed between frames", name)


def open_socket(
    context: zmq.Context[zmq.Socket[bytes]],
    kind: int,
    address: str,
    *,
    bind: bool,
    high_water_mark: int = DEFAULT_HIGH_WATER_MARK,
    curve: ClusterKey | None = None,
) -> zmq.Socket[bytes]:
    """A socket bound to, or connected to, ``address``; with ``curve``, a CURVE server (bound) or
    client (connected) with the cluster key (a binding process runs a ``Guard`` first)."""
    socket = context.socket(kind)
    socket.setsockopt(zmq.SNDHWM, high_water_mark)
    socket.setsockopt(zmq.RCVHWM, high_water_mark)
    socket.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        secure(socket, curve, server=bind)
    if bind:
        if address.startswith("ipc://"):
            path = address.removeprefix("ipc://")
            if os.path.exists(path):
                os.unlink(path)
        socket.bind(address)
    else:
        socket.connect(address)
    return socket


class Outlet:
    """A PUSH socket shared by several threads of the node. ``send_nowait`` never blocks: at the
    high-water mark it returns False, and the caller decides what that means."""

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        self._socket = socket
        self._lock = threading.Lock()

    def send_nowait(self, kind: bytes, items: list[bytes]) -> bool:
        frame = pack(kind, items)
        with self._lock:
            try:
                self._socket.send(frame, zmq.NOBLOCK, copy=len(frame) < 65536)
            except zmq.Again:
                return False
        return True

    def close(self, linger: int = 0) -> None:
        with self._lock:
            self._socket.close(linger=linger)
