"""actorao: a single-machine node for the AO compute protocol, as an Erlang-style actor runtime.

The exceptions, the config and the future come first because every room imports them; the node last
because it imports every room.
"""

from __future__ import annotations

from actorao._config import NodeConfig
from actorao._exceptions import (
    ActoraoError,
    ComputeLimitExceeded,
    InvalidMessage,
    MemoryLimitExceeded,
    ModuleError,
    NodeStopped,
    Overloaded,
    SignatureError,
    StoreFull,
    Timeout,
    Trap,
    UnknownMessage,
    UnknownProcess,
)
from actorao._future import Future
from actorao.message import Assignment, Message, Process, Result
from actorao.node import Ack, Node, ProcessState, StateStream

__all__ = [
    "Ack",
    "ActoraoError",
    "Assignment",
    "ComputeLimitExceeded",
    "Future",
    "InvalidMessage",
    "MemoryLimitExceeded",
    "Message",
    "ModuleError",
    "Node",
    "NodeConfig",
    "NodeStopped",
    "Overloaded",
    "Process",
    "ProcessState",
    "Result",
    "SignatureError",
    "StateStream",
    "StoreFull",
    "Timeout",
    "Trap",
    "UnknownMessage",
    "UnknownProcess",
]
