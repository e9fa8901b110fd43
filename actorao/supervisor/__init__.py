"""OTP supervision for OS processes: child specs, restart types, intensity and period."""

from __future__ import annotations

from actorao.supervisor._supervisor import ChildSpec, OSProcess, Restart, Supervisor

__all__ = ["ChildSpec", "OSProcess", "Restart", "Supervisor"]
