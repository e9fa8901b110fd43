"""Durable state: one LMDB environment with named sub-databases for modules, processes, messages by
id, the per-process log, results and checkpoints."""

from __future__ import annotations

from actorao.persist._logs import ShardLogs, existing_shards, shard_path
from actorao.persist._store import MODULE, OWNER, PROCESS, SUBDATABASES, ModuleRecord, Store, log_key, split_key

__all__ = ["MODULE", "OWNER", "PROCESS", "SUBDATABASES",
           "ModuleRecord", "ShardLogs", "Store", "existing_shards", "log_key", "shard_path",
           "split_key"]
