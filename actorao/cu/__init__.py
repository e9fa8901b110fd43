"""Compute units: a pool of worker OS processes, each hosting many AO processes, evaluating every
process's slots in order and storing the results."""

from __future__ import annotations

from actorao.cu._pool import WorkerPool, place, worker_entries
from actorao.cu._process import HostedProcess, Limits
from actorao.cu._worker import module_format_of

__all__ = ["HostedProcess", "Limits", "WorkerPool", "module_format_of", "place", "worker_entries"]
