"""The messenger unit: the entrance, which builds and checks everything that comes in before the SU
assigns it; the messenger, which cranks results' outboxes onto their targets on this node, each
message once; and cron, which assigns timed ticks to processes that asked for them."""

from __future__ import annotations

from actorao.mu._cron import Cron, parse_interval, tick_id
from actorao.mu._entrance import Entrance
from actorao.mu._messenger import Messenger, outgoing_id

__all__ = ["Cron", "Entrance", "Messenger", "outgoing_id", "parse_interval", "tick_id"]
