"""Compute units: a pool of worker OS processes, each hosting many AO processes, evaluating every
process's slots in order and storing the results."""

from __future__ import annotations

from actorao.cu._checkpoint import ReplacedWhileRead, StoredMemory
from actorao.cu._modules import ModuleRegistry, module_format_of
from actorao.cu._pool import WorkerPool, place, worker_entries
from actorao.cu._process import HostedProcess, Limits
from actorao.cu._ray import connect as ray_connect
from actorao.cu._ray import ray_module
from actorao.cu._rendezvous import Rendezvous
from actorao.cu._verify import Mismatch, Verification, verify_process

__all__ = [
    "HostedProcess",
    "Limits",
    "Mismatch",
    "ModuleRegistry",
    "Rendezvous",
    "ReplacedWhileRead",
    "StoredMemory",
    "Verification",
    "WorkerPool",
    "module_format_of",
    "place",
    "ray_connect",
    "ray_module",
    "verify_process",
    "worker_entries",
]
