"""The scheduler unit: slots, timestamps, hash chains and the durable log, with group commit."""

from __future__ import annotations

from actorao.persist import ModuleRecord
from actorao.su._scheduler import Ack, SchedulerUnit, process_record

__all__ = ["Ack", "ModuleRecord", "SchedulerUnit", "process_record"]
