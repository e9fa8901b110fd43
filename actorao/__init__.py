"""actorao: a single-machine node for the AO compute protocol, as an Erlang-style actor runtime.

The exceptions come first because every room imports them; the node last because it imports every
room.
"""

from __future__ import annotations

from actorao._exceptions import (
    ActoraoError,
    ComputeLimitExceeded,
    InvalidMessage,
    MemoryLimitExceeded,
    ModuleError,
    NodeStopped,
    Overloaded,
    SignatureError,
    Timeout,
    Trap,
    UnknownMessage,
    UnknownProcess,
)
from actorao.message import Assignment, Message, Process, Result
from actorao.node import Ack, Node

__all__ = [
    "Ack",
    "ActoraoError",
    "Assignment",
    "ComputeLimitExceeded",
    "InvalidMessage",
    "MemoryLimitExceeded",
    "Message",
    "ModuleError",
    "Node",
    "NodeStopped",
    "Overloaded",
    "Process",
    "Result",
    "SignatureError",
    "Timeout",
    "Trap",
    "UnknownMessage",
    "UnknownProcess",
]
