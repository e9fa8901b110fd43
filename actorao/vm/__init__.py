"""The wasmtime host: compile a module once, instantiate it per process, call ``handle`` fast, and
snapshot or restore linear memory. It knows nothing of slots or sockets.

``Evaluator`` is the one entry a worker uses: it turns a module's raw answer into a normalised result,
and every failure into an Error result, never an exception.
"""

from __future__ import annotations

from actorao.vm._evaluator import Evaluator, error_result
from actorao.vm._instance import DIFF_PAGE, HeldTooLong, HostResourceError, Instance, Snapshot, memory_digest
from actorao.vm._module import CompiledModule, artifact_suffix, compile_module, load_compiled
from actorao.vm._pages import new_buffer, nonzero_pages
from actorao.vm._weavedrive import HALT, Drive, DriveFile, FileNotAdmissible

__all__ = [
    "DIFF_PAGE",
    "HALT",
    "CompiledModule",
    "Drive",
    "DriveFile",
    "Evaluator",
    "FileNotAdmissible",
    "HeldTooLong",
    "HostResourceError",
    "Instance",
    "Snapshot",
    "artifact_suffix",
    "compile_module",
    "error_result",
    "load_compiled",
    "memory_digest",
    "new_buffer",
    "nonzero_pages",
]
