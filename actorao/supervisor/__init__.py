"""OTP supervision for OS processes and in-process actors: child specs, the four strategies, restart
types, intensity and period with escalation, links, monitors and heartbeats."""

from __future__ import annotations

from actorao.supervisor._child import (
    NORMAL,
    ActorChild,
    Child,
    OSProcess,
    SupervisedActor,
    ThreadChild,
    die_with_parent,
    exit_reason,
    start_heartbeat,
)
from actorao.supervisor._supervisor import (
    GAVE_UP,
    ChildSpec,
    Down,
    Restart,
    Strategy,
    Supervisor,
    SupervisorChild,
    SupervisorFailed,
)

__all__ = [
    "GAVE_UP",
    "NORMAL",
    "ActorChild",
    "Child",
    "ChildSpec",
    "Down",
    "OSProcess",
    "Restart",
    "Strategy",
    "SupervisedActor",
    "Supervisor",
    "SupervisorChild",
    "SupervisorFailed",
    "ThreadChild",
    "die_with_parent",
    "exit_reason",
    "start_heartbeat",
]
