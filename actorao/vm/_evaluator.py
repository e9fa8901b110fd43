"""Evaluating one message: call the instance, and turn whatever happened into an ao result."""

from __future__ import annotations

from typing import Any

import orjson

from actorao._config import DEFAULT_FUEL
from actorao._exceptions import ComputeLimitExceeded, ModuleError, Trap
from actorao.vm._instance import Instance

_EMPTY = ("Output", "Messages", "Spawns", "Assignments")


def error_result(error: str) -> bytes:
    return orjson.dumps({"Output": "", "Messages": [], "Spawns": [], "Assignments": [], "Error": error})


def _normalize(raw: bytes) -> tuple[bytes, bool]:
    """The module's ``{"ok", "response"}`` as the stored response object, and whether it failed."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # ao's loader reads the string with emscripten's UTF8ToString, which puts U+FFFD for bytes
        # that are not UTF-8 (text an LLM generated from random weights, say): so do we
        try:
            doc = orjson.loads(raw.decode("utf-8", errors="replace"))
        except orjson.JSONDecodeError as exc:
            raise Trap(f"Trap: handle returned invalid JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("response"), dict):
        raise Trap('Trap: handle must return {"ok": ..., "response": {...}}')
    response: dict[str, Any] = doc["response"]
    out = {
        "Output": response.get("Output", ""),
        "Messages": response.get("Messages") or [],
        "Spawns": response.get("Spawns") or [],
        "Assignments": response.get("Assignments") or [],
    }
    error = response.get("Error")
    failed = doc.get("ok") is not True or error not in (None, "")
    if failed:
        out["Error"] = error if isinstance(error, str) and error else "ModuleError: handle returned ok=false"
    return orjson.dumps(out), failed


class Evaluator:
    """Runs messages against instances under one fuel budget. Never raises for module faults."""

    def __init__(self, fuel: int = DEFAULT_FUEL) -> None:
        self.fuel = fuel

    def evaluate(self, instance: Instance, message: bytes, env: bytes) -> tuple[bytes, bool]:
        """Return (result JSON, failed). A failed message must be rolled back by the caller."""
        try:
            result, failed = _normalize(instance.call(message, env, self.fuel))
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
