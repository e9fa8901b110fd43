"""Modules in one place, for the node and the workers alike: what is stored for new module bytes (its
id, tags and Module-Format), compiling each module once per OS process, and the stored artifact that
spares every other process of the node the compile.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import wasmtime

from actorao._exceptions import InvalidMessage, ModuleError
from actorao.message import encode_id, is_id, parse_compute_limit, parse_memory_limit, tag_value
from actorao.persist import ModuleRecord, Store
from actorao.vm import CompiledModule, artifact_suffix, compile_module, load_compiled

__all__ = ["ModuleRegistry", "module_format_of"]

Tags = tuple[tuple[str, str], ...]


def module_format_of(meta: bytes) -> str | None:
    """The Module-Format tag of a stored module's meta, if it has one."""
    for tag in orjson.loads(meta).get("tags", []):
        if tag.get("name") == "Module-Format":
            return str(tag["value"])
    return None


class ModuleRegistry:
    """The modules of one store, each compiled once in this OS process. ``keep_artifacts``: store the
    machine code of a module compiled here, for the other processes (the node does, workers read)."""

    def __init__(self, store: Store, *, keep_artifacts: bool) -> None:
        self.store = store
        self._keep_artifacts = keep_artifacts
        self._compiled: dict[str, CompiledModule] = {}

    def exists(self, module_id: str) -> bool:
        return is_id(module_id) and self.store.module_meta(module_id) is not None

    def meta(self, module_id: str) -> bytes | None:
        return self.store.module_meta(module_id) if is_id(module_id) else None

    def tags(self, module_id: str, record: ModuleRecord | None = None) -> Tags:
        meta = record.meta if record is not None else self.meta(module_id)
        tags = orjson.loads(meta or b"{}").get("tags") or []
        return tuple((tag["name"], tag["value"]) for tag in tags)

    def compiled(
        self, module_id: str, source: ModuleRecord | None = None, module_format: str | None = None
    ) -> CompiledModule:
        """``module_id`` compiled: from this process's cache, else its stored artifact, else its wasm
        (``source``'s, or the store's). ``module_format``, when given, must be the module's."""
        compiled = self._compiled.get(module_id)
        if compiled is None:
            compiled = self._load(module_id) if source is None else compile_module(source.wasm, module_format)
            self._compiled[module_id] = compiled
        if module_format is not None and compiled.format != module_format:
            raise ModuleError(f"module: {module_id} is stored as {compiled.format}, not {module_format}")
        return compiled

    def _load(self, module_id: str) -> CompiledModule:
        meta = self.store.module_meta(module_id)
        if meta is None:
            raise ModuleError(f"ModuleError: module {module_id} is not in the store")
        module_format = module_format_of(meta)
        artifact = self.store.module_artifact(module_id, artifact_suffix())
        if artifact is not None:
            return load_compiled(artifact, module_format)
        wasm = self.store.module_wasm(module_id)
        if wasm is None:
            raise ModuleError(f"ModuleError: module {module_id} has no wasm in the store")
        compiled = compile_module(wasm, module_format)
        if self._keep_artifacts:  # a module stored by an older wasmtime gets this one's artifact too
            suffix, artifact = artifact_suffix(), compiled.serialize()
            self.store.write(lambda txn: self.store.put_artifact(txn, module_id, suffix, artifact))
        return compiled

    def record(
        self, module: bytes | str, module_format: str | None, module_tags: Tags, *, owner: str,
        module_id: str | None = None, signed_by: tuple[str, str] | None = None, signed: bytes | None = None,
        stored_at: int = 0,
    ) -> tuple[ModuleRecord | None, str]:
        """The record to store for new module bytes or WAT text (None for a stored module's id), and the
        id: the SHA-256 of the bytes, or ``module_id`` (a signed Module item's id). Compiles it once,
        checked against its Module-Format, so a module that cannot load is refused here. ``stored_at``
        (ms) dates it for the gateway's answers; no evaluation reads it."""
        given_format = tag_value(module_tags, "Module-Format")
        if given_format is not None and module_format is not None and given_format != module_format:
            raise InvalidMessage("module_tags['Module-Format']", f"{given_format!r} contradicts {module_format!r}")
        module_format = module_format or given_format
        if isinstance(module, str):
            if is_id(module):
                if not self.exists(module):
                    raise InvalidMessage("module", f"no module with id {module} is stored on this node")
                if module_tags:
                    raise InvalidMessage("module_tags", "are stored with new module bytes, not given for a stored id")
                self.compiled(module, None, module_format)
                return None, module
            try:  # WAT may open with comments, or be a bare list of fields: the parser decides
                module = bytes(wasmtime.wat2wasm(module))
            except wasmtime.WasmtimeError as exc:
                if "(" not in module:
                    raise InvalidMessage("module", "expected WASM bytes, WAT text or a stored module's id") from None
                raise ModuleError(f"module: WAT does not parse: {exc}") from exc
        if not isinstance(module, (bytes, bytearray)):
            raise InvalidMessage("module", f"expected WASM bytes, WAT text or an id, got {type(module).__name__}")
        wasm = bytes(module)
        module_id = module_id or encode_id(hashlib.sha256(wasm).digest())
        compiled = self.compiled(module_id, ModuleRecord(module_id, wasm, b""), module_format)
        defaults = (
            ("Data-Protocol", "ao"),
            ("Variant", "ao.TN.1"),
            ("Type", "Module"),
            ("Module-Format", compiled.format),
            ("Input-Encoding", "JSON-1"),
            ("Output-Encoding", "JSON-1"),
        )
        given = {name for name, _ in module_tags}
        # A signed module's tags are kept exactly as signed: they are what a gateway would answer.
        tags = module_tags if signed_by else tuple(pair for pair in defaults if pair[0] not in given) + module_tags
        for name, parse in (("Compute-Limit", parse_compute_limit), ("Memory-Limit", parse_memory_limit)):
            value = tag_value(tags, name)
            if value is not None:
                parse(value)
        meta: dict[str, Any] = {"owner": owner, "tags": [{"name": name, "value": value} for name, value in tags],
                                "stored_at": stored_at}
        if signed_by is not None:
            meta["key"], meta["signature"] = signed_by
        artifact = (artifact_suffix(), compiled.serialize())
        return ModuleRecord(module_id, wasm, orjson.dumps(meta), artifact, signed), module_id

    def add(self, record: ModuleRecord) -> None:
        """Store ``record`` (once: adding the same module again changes nothing)."""
        self.store.write(lambda txn: self.store.put_module(txn, record))
