"""Where the worker sockets live: ipc on this machine (the default), or TCP, which a worker on
another machine can reach, encrypted and authenticated with CURVE.

Every member of a node's cluster (the node, its scheduler shards, its workers) holds one cluster
key, a CURVE key pair kept in the node's data folder (``cluster.key``, readable by its owner only).
A socket that binds is a CURVE server with it, and admits a client only if that client proves it
holds the same key: a ZAP handler in each binding process refuses every other client key. A
stranger who connects, with no key or with a key of its own, fails the handshake, so it never gets
a frame and none it sends is read.

On TCP, a socket binds to a port the system picks, and says where it is: the node's sockets go to
the workers in their config, and each worker's feed goes to the shards through the node (READY).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import zmq
from zmq.auth.thread import ThreadAuthenticator

KEY_FILE = "cluster.key"
TRANSPORTS = ("ipc", "tcp")
_DOMAIN = "actorao"  # the ZAP domain of every CURVE server of a node


@dataclass(frozen=True, slots=True)
class ClusterKey:
    """A CURVE key pair, Z85-encoded (40 characters each)."""

    public: bytes
    secret: bytes

    def __repr__(self) -> str:  # the secret never goes to a log
        return f"ClusterKey(public={self.public.decode()!r})"

    @classmethod
    def load(cls, path: str | Path) -> ClusterKey:
        """The key at ``path``, made there first if there is none (readable by its owner only)."""
        path = Path(path)
        if not path.exists():
            public, secret = zmq.curve_keypair()
            text = orjson.dumps({"public": public.decode(), "secret": secret.decode()})
            partial = path.with_name(path.name + f".{os.getpid()}.tmp")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(partial, path)  # the first of two racing makers wins; the other reads its key
            except FileExistsError:
                pass
            finally:
                os.unlink(partial)
        try:
            doc: Any = orjson.loads(path.read_bytes())
            key = cls(doc["public"].encode(), doc["secret"].encode())
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} is not a cluster key ({{\"public\": ..., \"secret\": ...}}): {exc}") from exc
        if len(key.public) != 40 or len(key.secret) != 40 or zmq.curve_public(key.secret) != key.public:
            raise ValueError(f"{path}: its public key is not the one of its secret key")
        return key


@dataclass(frozen=True, slots=True)
class Transport:
    """How the node and its workers reach each other. ``host`` is where the TCP sockets of this
    machine bind, and the address the others are told; ``key_path`` is the cluster key's file."""

    kind: str = "ipc"
    host: str = "127.0.0.1"
    key_path: str = ""

    def __post_init__(self) -> None:
        if self.kind not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {self.kind!r}")

    @property
    def tcp(self) -> bool:
        return self.kind == "tcp"

    @property
    def key(self) -> ClusterKey | None:
        """The cluster key from its file, on TCP (a Ray worker is handed it instead, and reads no file)."""
        if not self.tcp:
            return None
        if not self.key_path:
            raise ValueError("a TCP transport needs the cluster key's file (key_path)")
        return ClusterKey.load(self.key_path)

    def any_port(self) -> str:
        """The address a socket binds to for a port of the system's choosing."""
        return f"tcp://{self.host}:0"


def secure(socket: zmq.Socket[bytes], key: ClusterKey, *, server: bool) -> None:
    """Make ``socket`` speak CURVE with the cluster key, before it binds (server) or connects."""
    if server:
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        socket.setsockopt(zmq.CURVE_SECRETKEY, key.secret)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, key.public)
        socket.setsockopt(zmq.ZAP_DOMAIN, _DOMAIN.encode())
    else:
        socket.setsockopt(zmq.CURVE_SERVERKEY, key.public)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, key.public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, key.secret)


class _Members:
    """The ZAP handler's question: is this client key the cluster's?"""

    def __init__(self, key: ClusterKey) -> None:
        self._public = key.public

    def callback(self, domain: str, client_key: bytes) -> bool:
        return client_key == self._public


class Guard:
    """The ZAP handler of one ZeroMQ context: started before any of its CURVE servers binds, it admits
    only the cluster's own key. One per context; ``stop`` before the context is terminated."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], key: ClusterKey) -> None:
        self._authenticator = ThreadAuthenticator(context)
        self._authenticator.start()
        self._authenticator.configure_curve_callback(_DOMAIN, credentials_provider=_Members(key))

    def stop(self) -> None:
        self._authenticator.stop()


def bound_address(socket: zmq.Socket[bytes]) -> str:
    """Where a socket bound, as another machine may connect to it (the port the system chose)."""
    endpoint = socket.getsockopt(zmq.LAST_ENDPOINT)
    return endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint)


__all__ = ["KEY_FILE", "TRANSPORTS", "ClusterKey", "Guard", "Transport", "bound_address", "secure"]
