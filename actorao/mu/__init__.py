"""The messenger unit: cranks results' outboxes onto their targets on this node, each message once."""

from __future__ import annotations

from actorao.mu._messenger import Messenger, outgoing_id

__all__ = ["Messenger", "outgoing_id"]
