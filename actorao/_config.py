"""One node's settings, parsed once: a frozen ``NodeConfig`` holds every default, and ``from_env()``
reads the ``ACTORAO_*`` variables for the CLI. The rooms take their values from it; none reads the
environment, and no default is spelled twice.

    config = NodeConfig.from_env(path="./data")      # ACTORAO_WORKERS=4 etc., then these overrides
    with actorao.Node(config) as node: ...
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actorao import _cpus
from actorao._exceptions import InvalidMessage

__all__ = ["NodeConfig"]

# The defaults of the rooms, here once. A room that can be used on its own (a Store, an SU in a test)
# takes these as its own defaults.
# Fuel for about one second of work on the 2-core box this was sized on: wasmtime spends its fuel
# slowest on the tightest loop, `(loop (br 0))`, at 0.66-0.9e9 fuel/s; an ALU loop runs 8e9/s and aos's
# Lua 1.3-5.8e9/s, so this is 0.2-0.8 s of aos, and aos's heaviest ordinary message, its first, needs 1e8.
DEFAULT_FUEL = 1_000_000_000
DEFAULT_MAX_FUEL = 10 * DEFAULT_FUEL  # the most a process's Compute-Limit may ask for
DEFAULT_MEMORY_LIMIT = 1 << 30
DEFAULT_MAX_MEMORY_LIMIT = 4 << 30  # the most a Memory-Limit may ask for: all a wasm32 module can address
DEFAULT_MAP_SIZE = 1 << 30  # LMDB grows it by doubling when full
DEFAULT_MAX_MAP_SIZE = 1 << 40  # up to this; past it a write fails with StoreFull (507 over HTTP)
DEFAULT_MAX_PENDING = 200_000  # messages waiting for assignment before the SU says Overloaded
DEFAULT_MAX_BACKLOG = 100_000  # outgoing messages waiting for the SU, across the node
DEFAULT_MAX_PER_RESULT = 10_000  # messages (and assignments, one per target) one result may send
DEFAULT_MAX_SPAWNS = 100  # processes one result may spawn
DEFAULT_MAX_RESULT_BYTES = 16 << 20  # the JSON one result may be: a message's largest Data, and room
DEFAULT_CATCH_UP = 10  # cron ticks a process catches up after the node was down
# A worker's evaluation threads: this many long messages at once before its other processes wait. A call
# into wasm lets go of the GIL, so they also share the cores among one worker's processes.
DEFAULT_WORKER_THREADS = 4
DEFAULT_HTTP_PORT = 8734


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Every setting of a node. Fields are keyword-only in ``Node(...)`` too:
    ``Node("./data", workers=2)`` is ``Node(NodeConfig(path=Path("./data"), workers=2))``."""

    path: Path = Path(".actorao")
    workers: int | None = None  # CU worker OS processes; None: one per core
    worker_threads: int = DEFAULT_WORKER_THREADS  # evaluation threads of each worker
    schedulers: int | None = None  # scheduler shard OS processes; None: one per 4 cores, at most 8
    # The CPUs the workers' evaluation threads run on, every other thread of the node on the rest
    # (``actorao/_cpus.py``): shorter serial round trips, fewer cores evaluating. None: the kernel places all.
    evaluation_cpus: frozenset[int] | None = None
    compute_limit: int = DEFAULT_FUEL  # a process's fuel per message, unless its Compute-Limit says
    memory_limit: int = DEFAULT_MEMORY_LIMIT  # bytes, unless its Memory-Limit says
    # Ceilings: a spawn whose Compute-Limit or Memory-Limit (its own, or its module's) asks for more is refused.
    max_compute_limit: int = DEFAULT_MAX_FUEL
    max_memory_limit: int = DEFAULT_MAX_MEMORY_LIMIT
    checkpoint_every: int = 1000  # messages between checkpoints of a process
    checkpoint_ms: float = 1000.0  # or this much compute, whichever comes first
    checkpoint_full_every: int = 16  # deltas between full checkpoints
    max_data_bytes: int = 10 * 1024 * 1024  # a message's Data
    max_pending: int = DEFAULT_MAX_PENDING
    map_size: int = DEFAULT_MAP_SIZE
    max_map_size: int = DEFAULT_MAX_MAP_SIZE  # the most each LMDB environment may grow to
    restart_intensity: tuple[int, float] = (10, 5.0)  # worker restarts allowed per that many seconds
    # How the node, its shards and its workers reach each other: "ipc" (this machine), or "tcp", bound
    # at transport_host, encrypted and authenticated with the cluster key (``<path>/cluster.key``).
    transport: str = "ipc"
    transport_host: str | None = None  # None: 127.0.0.1, or with Ray, this machine's address in the Ray cluster
    # CU workers as Ray actors, placed by Ray on the cluster at this address ("auto", "ray://…", or
    # "local": a Ray instance of the node's own), over TCP whatever ``transport`` says. None: OS processes.
    ray: str | None = None
    # Where each Ray-placed worker keeps its own store (checkpoints, compiled modules), on its machine:
    # a folder of fast local disk there. None: the temporary folder of that machine (often memory).
    ray_worker_path: str | None = None
    cron_catch_up: int = DEFAULT_CATCH_UP
    max_backlog: int = DEFAULT_MAX_BACKLOG
    # A result over any of these is an Error result (rolled back, nothing sent). They are part of how
    # results are evaluated, like the engine: a node reopened with lower ones evaluates such a result
    # differently, on a replay too.
    max_sends_per_result: int = DEFAULT_MAX_PER_RESULT
    max_spawns_per_result: int = DEFAULT_MAX_SPAWNS
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    timeout: float = 30.0  # seconds a blocking call waits by default
    # AO's HTTP API (``actorao node``): this machine only, unless told otherwise.
    host: str = "127.0.0.1"
    port: int = DEFAULT_HTTP_PORT
    verify: bool = True  # check every data item's signature
    max_body: int = 64 * 1024 * 1024  # a module item is the largest thing that comes in
    # Request bodies buffered at once, across every request in flight: past it, 503 and Retry-After.
    max_buffered_bodies: int = 256 * 1024 * 1024
    # As nginx counts them: the whole header must arrive within header_timeout of the connection
    # (or of the request's first byte), and the body may not pause longer than body_timeout.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    state_reads: int = 2  # GET /state reads streaming at once; past it, 503
    state_bytes_per_second: int = 256 * 1024 * 1024  # each state read's pace
    result_wait: float = 30.0  # seconds GET /result waits for an evaluation
    public_url: str | None = None  # where clients reach the node, for its Scheduler-Location
    # /dashboard and /metrics: required when set; without it they serve a loopback bind only
    admin_token: str | None = field(default=None, repr=False)
    # Keep what is alive when the node has started out of the garbage collector's full collections
    # while it is open (gc.freeze; see actorao/_gc.py): they cost the caller's process ~2 µs a message.
    # Left alone when the program freezes objects itself.
    freeze_gc: bool = True
    # The wall clock that stamps assignments (seconds); a test passes one it controls.
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        for name in ("workers", "schedulers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidMessage(name, f"must be a whole number of at least 1, got {value!r}")
        for name in ("worker_threads", "compute_limit", "memory_limit", "max_compute_limit", "max_memory_limit",
                     "checkpoint_every", "checkpoint_full_every", "max_data_bytes",
                     "max_pending", "map_size", "max_map_size", "max_backlog", "max_sends_per_result",
                     "max_spawns_per_result", "max_result_bytes", "max_body", "max_buffered_bodies", "state_reads",
                     "state_bytes_per_second"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidMessage(name, f"must be a whole number of at least 1, got {value!r}")
        for name in ("checkpoint_ms", "timeout", "result_wait", "header_timeout", "body_timeout"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise InvalidMessage(name, f"must be a positive number of seconds, got {getattr(self, name)!r}")
        for name, ceiling in (("compute_limit", "max_compute_limit"), ("memory_limit", "max_memory_limit")):
            if getattr(self, name) > getattr(self, ceiling):
                raise InvalidMessage(name, f"{getattr(self, name)} is over {ceiling} ({getattr(self, ceiling)}); "
                                     f"raise {ceiling} too")
        if self.evaluation_cpus is not None:
            object.__setattr__(self, "evaluation_cpus", _cpu_set(self.evaluation_cpus))
            if self.ray is not None:
                raise InvalidMessage("evaluation_cpus", "pins this machine's workers, and Ray places them: "
                                     "leave one of evaluation_cpus and ray unset")
        if self.transport not in ("ipc", "tcp"):
            raise InvalidMessage("transport", f"must be ipc or tcp, got {self.transport!r}")
        if self.cron_catch_up < 0:
            raise InvalidMessage("cron_catch_up", f"must not be negative, got {self.cron_catch_up}")
        if not 0 < self.port < 65536:
            raise InvalidMessage("port", f"must be 1 to 65535, got {self.port}")

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else (os.cpu_count() or 1)

    @property
    def scheduler_count(self) -> int:
        if self.schedulers is not None:
            return self.schedulers
        return max(1, min(8, (os.cpu_count() or 1) // 4))

    def replace(self, **changes: Any) -> NodeConfig:
        """A copy with ``changes``; an unknown setting is a TypeError that names it."""
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise TypeError(f"unknown node setting(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> NodeConfig:
        """The defaults, then ``ACTORAO_<SETTING>`` variables (``ACTORAO_WORKERS=4``,
        ``ACTORAO_RESTART_INTENSITY=10/5``), then ``overrides`` (None values are skipped, so a CLI can
        pass its flags as they are). A variable that does not parse names itself in the error."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            variable = f"ACTORAO_{name.upper()}"
            text = environ.get(variable)
            if text is None or text == "":
                continue
            try:
                values[name] = parse(text)
            except ValueError as exc:
                raise InvalidMessage(variable, f"cannot read {text!r}: {exc}") from exc
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls().replace(**values)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _cpu_set(value: object) -> frozenset[int]:
    """``evaluation_cpus`` as given (``"1,2"``, ``"4-7"``, or numbers) as a set of CPU numbers."""
    try:
        if isinstance(value, str):
            return _nonempty(_cpus.parse(value))
        if not isinstance(value, (set, frozenset, list, tuple, range)):
            raise ValueError(f"expected CPU numbers, as a set or a text like '2,3' or '4-7', got {value!r}")
        for cpu in value:
            if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 0:
                raise ValueError(f"{cpu!r} is not a CPU number")
        return _nonempty(frozenset(value))
    except ValueError as exc:
        raise InvalidMessage("evaluation_cpus", str(exc)) from exc


def _nonempty(cpus: frozenset[int]) -> frozenset[int]:
    if not cpus:
        raise ValueError("names no CPU; leave it unset to let the kernel place every thread")
    return cpus


def _intensity(text: str) -> tuple[int, float]:
    restarts, _, seconds = text.partition("/")
    return int(restarts), float(seconds or 5.0)


_FIELDS = frozenset(f.name for f in dataclasses.fields(NodeConfig))
_PARSERS: dict[str, Callable[[str], Any]] = {
    "path": Path, "workers": int, "worker_threads": int, "schedulers": int, "compute_limit": int, "memory_limit": int,
    "checkpoint_every": int,
    "max_compute_limit": int, "max_memory_limit": int,
    "checkpoint_ms": float, "checkpoint_full_every": int, "max_data_bytes": int, "max_pending": int,
    "map_size": int, "max_map_size": int, "restart_intensity": _intensity, "cron_catch_up": int, "max_backlog": int,
    "max_sends_per_result": int, "max_spawns_per_result": int, "max_result_bytes": int, "timeout": float,
    "host": str, "port": int, "verify": _bool, "max_body": int,
    "result_wait": float, "public_url": str, "max_buffered_bodies": int, "header_timeout": float,
    "body_timeout": float, "state_reads": int, "state_bytes_per_second": int,
    "admin_token": str, "freeze_gc": _bool, "transport": str, "transport_host": str, "ray": str,
    "ray_worker_path": str, "evaluation_cpus": _cpus.parse,
}
