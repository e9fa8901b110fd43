"""Evaluating one message: call the instance, and turn whatever happened into an ao result."""

from __future__ import annotations

from typing import Any

import orjson

from actorao._config import DEFAULT_FUEL, DEFAULT_MAX_PER_RESULT, DEFAULT_MAX_RESULT_BYTES, DEFAULT_MAX_SPAWNS
from actorao._exceptions import ComputeLimitExceeded, ModuleError, Trap
from actorao.vm._instance import Instance

_EMPTY = ("Output", "Messages", "Spawns", "Assignments")


def error_result(error: str) -> bytes:
    return orjson.dumps({"Output": "", "Messages": [], "Spawns": [], "Assignments": [], "Error": error})


def _sends(response: dict[str, Any]) -> tuple[int, int]:
    """(messages and assignment targets, spawns) a response asks the node to send."""
    def size(value: Any) -> int:
        return len(value) if isinstance(value, list) else 0

    assignments = response.get("Assignments")
    targets = sum(size(entry.get("Processes")) for entry in assignments if isinstance(entry, dict)) \
        if isinstance(assignments, list) else 0
    return size(response.get("Messages")) + targets, size(response.get("Spawns"))


def _normalize(raw: bytes, max_sends: int, max_spawns: int, max_bytes: int) -> tuple[bytes, bool]:
    """The module's ``{"ok", "response"}`` as the stored response object, and whether it failed. A
    response over a limit, of ``max_bytes`` for the whole JSON the module returned (Output and the
    sent messages' Data with it), of ``max_sends`` messages (assignments count, one per target) or of
    ``max_spawns`` processes, fails whole: it is an Error naming the limit, and its outbox is dropped,
    so a fan-out bomb is answered, not half delivered. Each depends only on what the module returned."""
    if len(raw) > max_bytes:
        return error_result(f"ResultLimitExceeded: the result is {len(raw):,} bytes; a result may be at most "
                            f"{max_bytes:,} bytes (max_result_bytes)"), True
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # ao's loader reads the string with emscripten's UTF8ToString, which puts U+FFFD for bytes
        # that are not UTF-8 (text an LLM generated from random weights, say): so do we
        try:
            doc = orjson.loads(raw.decode("utf-8", errors="replace"))
        except orjson.JSONDecodeError as exc:
            raise Trap(f"Trap: handle returned invalid JSON: {exc}") from exc
    response = doc.get("response") if isinstance(doc, dict) else None
    if not isinstance(response, dict):
        raise Trap('Trap: handle must return {"ok": ..., "response": {...}}')
    error = response.get("Error")
    messages = response.get("Messages") or []
    spawned = response.get("Spawns") or []
    assignments = response.get("Assignments") or []
    out = {"Output": response.get("Output", ""), "Messages": messages, "Spawns": spawned, "Assignments": assignments}
    if doc.get("ok") is not True or error not in (None, ""):
        out["Error"] = error if isinstance(error, str) and error else "ModuleError: handle returned ok=false"
        return orjson.dumps(out), True
    if not (messages or spawned or assignments):  # most results send nothing: no limit to check
        return orjson.dumps(out), False
    sends, spawns = _sends(response)
    if sends > max_sends:
        return error_result(f"OutboxLimitExceeded: the result sends {sends:,} messages and assignments; a result "
                            f"may send at most {max_sends:,} (max_sends_per_result)"), True
    if spawns > max_spawns:
        return error_result(f"OutboxLimitExceeded: the result spawns {spawns:,} processes; a result may spawn at "
                            f"most {max_spawns:,} (max_spawns_per_result)"), True
    return orjson.dumps(out), False


class Evaluator:
    """Runs messages against instances under one fuel budget and the limits of a result. Never raises
    for module faults."""

    def __init__(
        self, fuel: int = DEFAULT_FUEL, *, max_sends: int = DEFAULT_MAX_PER_RESULT,
        max_spawns: int = DEFAULT_MAX_SPAWNS, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.fuel = fuel
        self.max_sends = max_sends
        self.max_spawns = max_spawns
        self.max_result_bytes = max_result_bytes

    def evaluate(self, instance: Instance, message: bytes, env: bytes, held: int = 0) -> tuple[bytes, bool]:
        """Return (result JSON, failed). A failed message must be rolled back by the caller. ``held``
        is ``Instance.call``'s: its HeldTooLong is raised, for the caller to roll back and run again."""
        try:
            result, failed = _normalize(instance.call(message, env, self.fuel, held), self.max_sends, self.max_spawns,
                                        self.max_result_bytes)
        except ComputeLimitExceeded as exc:
            return error_result(str(exc)), True
        except ModuleError as exc:
            if instance.host.limit_hit:
                return error_result(_memory_limit(instance, str(exc))), True
            return error_result(str(exc)), True
        if failed and instance.host.limit_hit:
            # The module answered with an Error of its own: it is the memory limit's doing only if
            # it says so (aos: "not enough memory"), not if Lua caught that earlier and failed later.
            error = str(orjson.loads(result).get("Error", ""))
            if "memory" in error.lower():
                return error_result(_memory_limit(instance, error)), True
        return result, failed


def _memory_limit(instance: Instance, cause: str) -> str:
    detail = " ".join(cause.split())[:300]
    return (
        f"MemoryLimitExceeded: the process reached its memory limit of {instance.effective_memory_limit()} "
        f"bytes ({detail})"
    )
