"""The messenger unit: cranks results' outboxes onto their targets on this node, each message once;
and cron, which assigns timed ticks to processes that asked for them."""

from __future__ import annotations

from actorao.mu._cron import Cron, parse_interval, tick_id
from actorao.mu._messenger import Messenger, outgoing_id

__all__ = ["Cron", "Messenger", "outgoing_id", "parse_interval", "tick_id"]
