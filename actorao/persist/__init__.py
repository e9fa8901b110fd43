"""Durable state: one LMDB environment with named sub-databases for modules, processes, messages by
id, the per-process log, results and checkpoints."""

from __future__ import annotations

from actorao.persist._store import SUBDATABASES, ModuleRecord, Store, log_key, split_key

__all__ = ["SUBDATABASES", "ModuleRecord", "Store", "log_key", "split_key"]
