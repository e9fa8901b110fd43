"""The scheduler unit: slots, timestamps, hash chains and the durable log, with group commit."""

from __future__ import annotations

from actorao.persist import ModuleRecord
from actorao.su._attest import handoff_problem, public_key_of, verify_handoff, verify_page
from actorao.su._client import NewMessage, Schedulers, shard_for
from actorao.su._scheduler import Ack, NewMessages, SchedulerUnit, process_record
from actorao.su._shard import ShardConfig
from actorao.su._wire import NewRow

__all__ = [
    "Ack",
    "ModuleRecord",
    "NewMessage",
    "NewMessages",
    "NewRow",
    "SchedulerUnit",
    "Schedulers",
    "ShardConfig",
    "handoff_problem",
    "process_record",
    "public_key_of",
    "shard_for",
    "verify_handoff",
    "verify_page",
]
