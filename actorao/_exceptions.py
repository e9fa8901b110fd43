"""Every error actorao raises, as one tree. Users catch what they understand.

    ActoraoError
    ├── InvalidMessage        a message, tag, module or argument is malformed (names the field)
    ├── SignatureError        a signature does not verify
    ├── UnknownProcess        no process with that id lives on this node
    ├── UnknownMessage        no message with that id was ever assigned here
    ├── ModuleError           a module cannot load, or its evaluation failed
    │   ├── ComputeLimitExceeded   it ran out of fuel
    │   ├── MemoryLimitExceeded    it grew past its memory limit
    │   └── Trap                   it trapped (unreachable, out of bounds, bad result ...)
    ├── Overloaded            a bound was hit (queue high-water mark, size limit); retry later
    ├── StoreFull             the disk, or the store's max_map_size, is full: nothing of that write was kept
    ├── Timeout               a wait ran out before its answer arrived
    └── NodeStopped           the node is closed, or closed while the call was waiting

Library errors (zmq, lmdb, wasmtime) are mapped to these at the edge, with the cause chained.
"""

from __future__ import annotations

__all__ = [
    "ActoraoError",
    "ComputeLimitExceeded",
    "InvalidMessage",
    "MemoryLimitExceeded",
    "ModuleError",
    "NodeStopped",
    "Overloaded",
    "SignatureError",
    "StoreFull",
    "Timeout",
    "Trap",
    "UnknownMessage",
    "UnknownProcess",
]


class ActoraoError(Exception):
    """The base of every actorao error."""


class InvalidMessage(ActoraoError):
    """Input is malformed. ``field`` names what was wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[type[InvalidMessage], tuple[str, str]]:
        return (type(self), (self.field, self.reason))


class SignatureError(ActoraoError):
    """A signature does not verify."""


class UnknownProcess(ActoraoError):
    """No process with this id lives on this node."""


class UnknownMessage(ActoraoError):
    """No message with this id was assigned on this node."""


class ModuleError(ActoraoError):
    """A module cannot be loaded, or evaluating it failed."""


class ComputeLimitExceeded(ModuleError):
    """Evaluation ran out of fuel."""


class MemoryLimitExceeded(ModuleError):
    """Evaluation grew memory past its limit."""


class Trap(ModuleError):
    """Evaluation trapped, or the module broke the interface."""


class Overloaded(ActoraoError):
    """A bound was hit; the caller should slow down and retry."""


class StoreFull(ActoraoError):
    """A write did not fit: the disk is full (or failing), or the store reached its max_map_size.
    The write's transaction was aborted whole, so nothing of it was kept and nothing was
    acknowledged; free space (or raise max_map_size) and send it again."""


class Timeout(ActoraoError, TimeoutError):
    """A wait ended before its answer arrived. It is a ``TimeoutError`` too, so code that waits on
    anything catches it the usual way."""


class NodeStopped(ActoraoError):
    """The node is closed."""
