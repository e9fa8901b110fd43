"""Verify a process from its log alone: replay it in a fresh instance with no checkpoint, check every
slot's hash-chain link, and compare each result and the final memory hash with what the node stored.

The replay runs the code a worker runs (``load_process``, ``HostedProcess.deliver``) with its
checkpoints kept in memory only, so rollback after an Error costs what it costs on a worker; nothing
it makes is written. A log that spans shards (re-host hand-offs) is read across them, and each
hand-off's head is checked against the slot before it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson

from actorao.cu._modules import ModuleRegistry
from actorao.cu._process import HostedProcess, Limits, broken_reason, load_process
from actorao.message import Assignment, assignment_from_module_json
from actorao.persist import ShardLogs, Store, split_key
from actorao.vm import HostResourceError, error_result

__all__ = ["Mismatch", "Verification", "verify_process"]

_PAGE = 256  # log slots read at a time: a long log is never held whole
_Report = Callable[[str, int, str], None]
HandoffCheck = Callable[[bytes], str | None]  # a hand-off record -> why its signature fails, or None


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The first slot where one kind of check fails: ``chain`` (the slot's link to the one before, its
    nonce, its index entry), ``result`` (the replay's result against the stored one) or ``memory``
    (the final memory hash against the node's; its slot is the last one)."""

    kind: str
    slot: int
    detail: str

    def __str__(self) -> str:
        return f"slot {self.slot}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Verification:
    """What ``verify`` found for one process: the slots replayed, the replay's memory hash and the
    node's, and the first mismatch of each kind (none when the process verifies)."""

    process: str
    slots: int
    digest: str
    node_digest: str
    mismatches: tuple[Mismatch, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def first(self) -> Mismatch | None:
        """The mismatch at the lowest slot."""
        return min(self.mismatches, key=lambda found: found.slot, default=None)

    def summary(self) -> str:
        """One line: ``ok`` with the slots and hash, or the first slot that differs and why."""
        if self.first is None:
            return f"{self.process}: ok, {self.slots} slots replayed, memory sha256 {self.digest or '(none)'}"
        return f"{self.process}: MISMATCH at {self.first}" + (
            f" (and {len(self.mismatches) - 1} more kinds)" if len(self.mismatches) > 1 else "")


def verify_process(
    pid: str, store: Store, logs: ShardLogs, modules: ModuleRegistry, defaults: Limits, last: int,
    node_digest: str, check_handoff: HandoffCheck | None = None,
) -> Verification:
    """Replay slots 0..``last`` of ``pid`` from its log and check them; ``node_digest`` is the memory
    hash the node's worker holds after ``last`` ("" for a process that cannot be evaluated), and
    ``check_handoff`` checks the signature of each hand-off record the log crosses."""
    found: dict[str, Mismatch] = {}

    def mismatch(kind: str, slot: int, detail: str) -> None:
        found.setdefault(kind, Mismatch(kind, slot, detail))

    # No checkpoint is stored, and none is read: snapshots for rollback are kept in memory.
    # The node's outbox limits too: a result over them is an Error on the worker, and so in the replay.
    limits = dataclasses.replace(defaults, checkpoint_every=64, checkpoint_ms=math.inf, full_every=1 << 30)
    process: HostedProcess | None = None
    broken: str | None = None
    try:
        process = load_process(pid, store, logs, modules, limits, lambda _pid, _encoded: None)
    except HostResourceError:
        raise
    except Exception as exc:  # the node's worker answers every message of this process with this Error
        broken = broken_reason(exc)

    handoffs = _handoffs(logs, pid)
    before: Assignment | None = None
    slots = 0
    for slot, entry, stored in _log(store, logs, pid, last):
        if slot != slots:
            mismatch("chain", slots, f"the log has no slot {slots} (the next it holds is {slot})")
            break
        slots += 1
        if slot in handoffs and check_handoff is not None and (why := check_handoff(handoffs[slot])) is not None:
            mismatch("chain", slot, why)
        _check_link(pid, slot, entry, before, handoffs.get(slot), logs, mismatch)
        try:
            before = assignment_from_module_json(entry, pid)
        except (KeyError, TypeError, orjson.JSONDecodeError):
            before = None
        replayed: bytes | None = None
        if process is not None:
            try:
                replayed = dict(process.deliver(slot, entry)).get(slot)
            except HostResourceError:
                raise
            except Exception as exc:  # the worker breaks the process here, and answers with this Error
                process, broken = None, broken_reason(exc)
        if process is None:
            replayed = error_result(str(broken))
        _check_result(slot, stored, replayed, mismatch)
    if slots < last + 1 and "chain" not in found:
        mismatch("chain", slots, f"the log ends at slot {slots - 1}, before slot {last}")
    digest = process.instance.digest() if process is not None else ""
    if digest != node_digest:
        mismatch("memory", last, f"the replay's memory sha256 is {digest or '(none)'}, the node's "
                                 f"{node_digest or '(none)'}")
    return Verification(pid, slots, digest, node_digest, tuple(sorted(found.values(), key=lambda m: m.slot)))


def _log(store: Store, logs: ShardLogs, pid: str, last: int) -> Iterator[tuple[int, bytes, bytes | None]]:
    """``pid``'s log entries 0..last, across its shards, each with its stored result, a page at a time."""
    for first in itertools.count(0, _PAGE):
        if first > last:
            return
        end = min(last, first + _PAGE - 1)
        page = logs.log_range(pid, first, end)
        results = dict(store.slot_range("results", pid, first, end))
        for slot, entry in page:
            yield slot, entry, results.get(slot)
        if not page:
            return


def _handoffs(logs: ShardLogs, pid: str) -> dict[int, bytes]:
    """Each hand-off record of ``pid``, by the first slot its new shard scheduled. Both shards keep a
    copy; the adopting shard's (the later store) is the one read."""
    return {slot: raw for store in logs.stores for slot, raw in store.handoffs(pid)}


def _check_link(
    pid: str, slot: int, entry: bytes, before: Assignment | None, handoff: bytes | None, logs: ShardLogs,
    mismatch: _Report,
) -> None:
    """The slot's nonce, its Hash-Chain from the slot before (or the genesis), its timestamp, the head a
    hand-off to it names, and the messages index pointing back at it."""
    try:
        doc = orjson.loads(entry)
        nonce, chain, message_id, timestamp = doc["Nonce"], doc["Hash-Chain"], doc["Id"], doc["Timestamp"]
    except (KeyError, TypeError, orjson.JSONDecodeError) as exc:
        mismatch("chain", slot, f"the log entry is not an assignment ({exc!r})")
        return
    if nonce != slot:
        mismatch("chain", slot, f"the entry's Nonce is {nonce}")
        return
    if slot == 0:
        expected = Assignment.genesis_hash_chain(pid)
        if message_id != pid:
            mismatch("chain", slot, f"slot 0 holds message {message_id}, not the process's own spawn")
    elif before is None:
        return  # the slot before was reported already
    else:
        expected = before.next_hash_chain()
        if timestamp < before.timestamp:
            mismatch("chain", slot, f"Timestamp {timestamp} is before slot {slot - 1}'s {before.timestamp}")
    if chain != expected:
        mismatch("chain", slot, f"Hash-Chain {chain} does not follow from slot {slot - 1} (expected {expected})"
                 if slot else f"Hash-Chain {chain} is not the process's genesis {expected}")
    head = orjson.loads(handoff).get("head") if handoff is not None else None
    if handoff is not None and before is not None and head != [before.slot, before.message, before.timestamp,
                                                               before.hash_chain]:
        mismatch("chain", slot, f"the hand-off to this slot continues from {head}, not from slot {slot - 1}")
    key = logs.assignment_of(message_id, pid)
    if key is None or split_key(key) != (pid, slot):
        where = "nowhere" if key is None else "slot {1} of {0}".format(*split_key(key))
        mismatch("chain", slot, f"message {message_id} is indexed at {where}, not here")


def _check_result(slot: int, stored: bytes | None, replayed: bytes | None, mismatch: _Report) -> None:
    if stored is None:
        mismatch("result", slot, "the node stored no result")
    elif replayed is None:
        mismatch("result", slot, "the replay gave no result")
    elif stored != replayed and orjson.loads(stored) != orjson.loads(replayed):
        mismatch("result", slot, f"stored {_short(stored)}, replayed {_short(replayed)}")


def _short(raw: bytes, limit: int = 160) -> str:
    text = raw.decode(errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"
