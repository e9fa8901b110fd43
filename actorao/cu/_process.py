"""One AO process hosted by a worker: its instance, its nonce-ordered inbox, rollback and checkpoints.

Rollback is cheap on the happy path: nothing is copied before a message. When a message fails, a
fresh instance is restored from the last checkpoint and the log is replayed up to the slot before
the failure, skipping slots that failed too. Determinism makes that replay exact.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import orjson

from actorao._config import DEFAULT_MAX_PER_RESULT, DEFAULT_MAX_RESULT_BYTES, DEFAULT_MAX_SPAWNS
from actorao._exceptions import ModuleError
from actorao.cu import _checkpoint as checkpoints
from actorao.cu._drive import ProcessDrive, weavedrive_enabled
from actorao.mailbox import NonceInbox
from actorao.message import process_env
from actorao.persist import Store
from actorao.vm import CompiledModule, Evaluator, HeldTooLong, Instance, Snapshot

if TYPE_CHECKING:
    from actorao.cu._modules import ModuleRegistry

log = logging.getLogger(__name__)
# Checkpoints on compute time wait for this many times what the last one cost: a 1.2 GiB memory's
# scan takes 0.2 s, and would otherwise be paid after every second of a model's generation.
_COST_RATIO = 20
# Fuel a message may burn with the GIL held (a few ms at wasm's slowest fuel rate): a process whose last
# message burnt at most a sixteenth of it runs the next one so. Letting the GIL go and taking it back
# around each call costs a small message most of its CPU in a busy worker, where every other thread
# wants it too; a long message lets it go, so a worker's other processes and its main thread go on.
HELD_FUEL = 4_000_000
_SMALL_FUEL = HELD_FUEL // 16
# Compute a turn on the worker's main thread may take (``Worker.run_inline``) before a thread takes the
# rest: about what one message of HELD_FUEL takes. The compute clock tells, as for checkpoints: host
# time decides which thread runs a message, never what it gives. Reading the fuel each message used
# would cost a call into wasmtime a message.
TURN_SECONDS = 0.002


class HandOff(Exception):
    """A turn on the worker's main thread (``HostedProcess.handing_off``) goes on on an evaluation thread
    from ``slot``: that message ran past the fuel it may burn held, and the main thread must not run it
    released; or the turn's messages have taken TURN_SECONDS of compute between them, and the main thread
    has its sockets to serve. ``done`` is what this call evaluated before it, ``left`` the slots it took and did
    not evaluate, from ``slot``; the inbox expects ``slot`` next again."""

    def __init__(self, slot: int, done: list[tuple[int, bytes]], left: list[tuple[int, bytes]]) -> None:
        super().__init__(f"the turn goes on on an evaluation thread from slot {slot}")
        self.slot = slot
        self.done = done
        self.left = left


@dataclass(frozen=True, slots=True)
class Limits:
    """A process's compute and memory limits, its outbox limits, and the checkpoint policy: every
    ``checkpoint_every`` messages or ``checkpoint_ms`` of compute, whichever comes first, with a full base
    every ``full_every`` deltas."""

    fuel: int
    memory: int
    checkpoint_every: int
    checkpoint_ms: float = 1000.0
    full_every: int = 16
    max_sends: int = DEFAULT_MAX_PER_RESULT  # messages and assignments a result may send
    max_spawns: int = DEFAULT_MAX_SPAWNS  # processes a result may spawn
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES  # the JSON a result may be


class HostedProcess:
    """Evaluates one process's slots strictly in order and keeps what rollback needs."""

    def __init__(
        self,
        pid: str,
        store: Store,
        compiled: CompiledModule,
        env: bytes,
        limits: Limits,
        evaluator: Evaluator,
        on_checkpoint: Callable[[str, checkpoints.Encoded], None],
        compute_clock: Callable[[], float] = time.perf_counter,
        log_range: Callable[[str, int, int], list[tuple[int, bytes]]] | None = None,
    ) -> None:
        self.pid = pid
        self._log_range = log_range or store.log_range  # the log of this process's shard
        # This process's log, for its inbox's gaps, replays and WeaveDrive: bound to the id, not to the
        # process, so that nothing it holds refers back to it. A process let go of (evicted, forgotten,
        # broken) is then freed at once, its linear memory with it, not at the next full collection.
        self._read_log = functools.partial(self._log_range, pid)
        self._compute_clock = compute_clock  # host time for the checkpoint policy only; tests fix it
        self._on_checkpoint = on_checkpoint
        self.store = store
        self.compiled = compiled
        self.env = env
        self.limits = limits
        self.evaluator = evaluator
        self.checkpoint_slot = -1  # -1: the module's initial state
        self.checkpoint: Snapshot | None = None
        self.failed: set[int] = set()  # slots after the checkpoint whose result is an Error
        self.instance = Instance(compiled, memory_limit=limits.memory, fuel=limits.fuel)
        self.inbox: NonceInbox[bytes] = NonceInbox(0, self._read_log)
        self.since_checkpoint = 0
        self.compute_since_checkpoint = 0.0  # seconds of evaluation: host time, never seen by modules
        self.deltas_since_full = limits.full_every  # the first checkpoint is a full one
        self.checkpoint_cost = 0.0  # seconds the last checkpoint took (host time, as compute is)
        self.weavedrive = weavedrive_enabled(env)
        self.held = 0  # the fuel the next message may burn with the GIL held (0: not held)
        self._never_held = self.weavedrive  # its reads of files are the host's work, and fuel bounds none of it
        # On the worker's main thread a message that runs past ``held`` is not run again released: it
        # raises HandOff, and the instance (in an unknown state) is rolled back on the thread that takes
        # the rest of the turn, before anything reads it (``_settle``).
        self.handing_off = False
        self.turn_seconds = 0.0  # compute its messages took in the main thread's turn (``Worker.run_inline``)
        self._rollback_before: int | None = None

    def _run(self, slot: int, message: bytes) -> tuple[bytes, bool]:
        """Evaluate ``message`` as slot ``slot``, with the WeaveDrive files it may read: with the GIL held
        while this process's messages stay small, and, from the first that burns more than HELD_FUEL,
        without, and again from the state before it (the held run's is unknown); or, on the worker's
        main thread (``handing_off``), not again here: HandOff."""
        files = getattr(self.instance.host, "files", None)
        if files is not None:
            files.drive = ProcessDrive(self.store, self.env, self._read_log, slot, message) if self.weavedrive else None
        if self.held:
            try:
                answer = self.evaluator.evaluate(self.instance, message, self.env, self.held)
            except HeldTooLong:
                self.held, self._never_held = 0, True
                if self.handing_off:  # _evaluate_all says what is left, and from which state to go on
                    raise HandOff(slot, [], []) from None
                self._rollback(slot)
                return self._run(slot, message)
            return answer
        answer = self.evaluator.evaluate(self.instance, message, self.env)
        if not self._never_held and self.instance.fuel_used <= _SMALL_FUEL:
            self.held = HELD_FUEL
        return answer

    def _settle(self) -> None:
        """Roll back from a message handed off half-run (HandOff), before the instance is used again."""
        if self._rollback_before is not None:
            before, self._rollback_before = self._rollback_before, None
            self._rollback(before)

    def turn_spent(self) -> bool:
        """On the main thread, the turn's messages have taken their share: the rest goes on a thread."""
        return self.handing_off and self.turn_seconds >= TURN_SECONDS

    def _fresh_instance(self) -> Instance:
        return Instance(self.compiled, memory_limit=self.limits.memory, fuel=self.limits.fuel)

    # -- loading --------------------------------------------------------------------------------
    def recover(self) -> None:
        """Come back to the state after the last stored result: checkpoint plus log replay."""
        self._restore_stored_checkpoint()
        last = self.store.last_slot("results", self.pid)
        if last is None or last <= self.checkpoint_slot:
            self.inbox.next_slot = self.checkpoint_slot + 1
            return
        stored = self._read_results(self.checkpoint_slot + 1, last)
        self.failed = {slot for slot, result in stored.items() if orjson.loads(result).get("Error") is not None}
        self._replay(self.checkpoint_slot + 1, last)
        self.inbox.next_slot = last + 1
        self.since_checkpoint = last - self.checkpoint_slot

    def _read_results(self, first: int, last: int) -> dict[int, bytes]:
        return dict(self.store.slot_range("results", self.pid, first, last))

    def _replay(self, first: int, last: int) -> None:
        """Re-evaluate log slots first..last on the live instance, skipping slots that failed. The range
        is empty when slot 0 (the spawn) fails: the fresh instance is then the state to go on from."""
        if last < first:
            return
        for slot, message in self._read_log(first, last):
            if slot in self.failed:
                continue
            _, failed = self._run(slot, message)
            if failed:  # cannot happen with a deterministic module; say so loudly if it does
                log.error("process %s: slot %d failed on replay but not originally", self.pid, slot)

    def _restore_stored_checkpoint(self) -> None:
        """Restore the newest stored checkpoint into the instance, and keep it (only its non-zero
        pages take memory): the next checkpoint is a delta against it, and a rollback restores it."""
        chain = checkpoints.read_chain(self.store, self.pid)
        if chain:
            self.checkpoint_slot, self.checkpoint = checkpoints.restore_chain(chain, self.instance)
            self.deltas_since_full = len(chain) - 1

    def _rollback(self, before_slot: int) -> None:
        self.instance = self._fresh_instance()
        if self.checkpoint is not None:
            self.instance.restore(self.checkpoint)
        elif self.checkpoint_slot >= 0:  # recovered, and no checkpoint taken since: it is in the store
            self._restore_stored_checkpoint()
        self._replay(self.checkpoint_slot + 1, before_slot - 1)

    # -- evaluation -----------------------------------------------------------------------------
    def deliver(self, slot: int, message: bytes) -> list[tuple[int, bytes]]:
        """Take slot ``slot``; return (slot, result JSON) for every slot now evaluated, in order."""
        self._settle()
        return self._evaluate_all(self.inbox.offer(slot, message))

    def catch_up(self, last: int) -> list[tuple[int, bytes]]:
        """Evaluate whatever the log holds up to ``last`` that this process has not seen."""
        self._settle()
        return self._evaluate_all(self.inbox.fill_to(last))

    def _evaluate_all(self, ready: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        done: list[tuple[int, bytes]] = []
        for index, (slot, body) in enumerate(ready):
            if self.turn_spent():  # never before the turn's first message: it has taken no compute yet
                self.inbox.next_slot = slot
                raise HandOff(slot, done, ready[index:])
            try:
                done.append((slot, self._evaluate(slot, body)))
            except HandOff as exc:
                # The state to go on from is the one before ``slot``, also when the held message that
                # ran long was one the rollback after ``slot`` failed was replaying.
                self._rollback_before = self.inbox.next_slot = slot
                exc.done, exc.left = done, ready[index:]
                raise
        return done

    def _evaluate(self, slot: int, message: bytes) -> bytes:
        started = self._compute_clock()
        result, failed = self._run(slot, message)
        if failed:
            self.failed.add(slot)
            self._rollback(slot)
        took = self._compute_clock() - started
        self.compute_since_checkpoint += took
        self.turn_seconds += took  # read on the main thread only (``turn_spent``)
        # Failed slots count too: after a rollback the state is the state after ``slot`` (which
        # changed nothing), so a checkpoint here bounds the next rollback's replay.
        self.since_checkpoint += 1
        if (
            self.since_checkpoint >= self.limits.checkpoint_every
            or self.compute_since_checkpoint
            >= max(self.limits.checkpoint_ms / 1000, _COST_RATIO * self.checkpoint_cost)
        ):
            self._take_checkpoint(slot)
        return result

    def checkpoint_now(self) -> None:
        """Checkpoint the state after the last evaluated slot, unless the newest checkpoint is it."""
        self._settle()
        last = self.inbox.next_slot - 1
        if last > self.checkpoint_slot or (last == self.checkpoint_slot and self.checkpoint is None and last >= 0):
            self._take_checkpoint(last)

    def _take_checkpoint(self, slot: int) -> None:
        """Keep the snapshot for rollback, and hand it, as a delta against the one before or as a new
        full base, to the worker to store with this batch."""
        started = self._compute_clock()
        first = self.checkpoint is None
        snapshot, pages = self.instance.update_snapshot(self.checkpoint)
        if first or self.deltas_since_full >= self.limits.full_every:  # a full one: its non-zero pages
            encoded = checkpoints.encode(slot, snapshot, None, None, nonzero=pages if first else None)
        else:
            encoded = checkpoints.encode(slot, snapshot, self.checkpoint_slot, pages)
        self.checkpoint_cost = self._compute_clock() - started
        self.deltas_since_full = 0 if encoded.full else self.deltas_since_full + 1
        self.checkpoint, self.checkpoint_slot = snapshot, slot
        self.failed.clear()
        self.since_checkpoint = 0
        self.compute_since_checkpoint = 0.0
        self._on_checkpoint(self.pid, encoded)

    def dry_run(self, message: bytes) -> bytes:
        """Evaluate ``message`` on the current state and put the state back as it was."""
        self._settle()
        instance = self.instance
        before = instance.snapshot()
        result, failed = self._run(self.inbox.next_slot, message)
        if failed or self.instance is not instance or self.instance.memory_size() != len(before.memory):
            self.instance = self._fresh_instance()
        self.instance.restore(before)
        return result


class LogReader(Protocol):
    """Where a process's log is read: the shards' logs on this machine, or the node's over the network."""

    def process_record(self, pid: str) -> bytes | None: ...

    def log_entry(self, pid: str, slot: int) -> bytes | None: ...

    def log_range(self, pid: str, first: int, last: int) -> list[tuple[int, bytes]]: ...


def load_process(
    pid: str, store: Store, logs: LogReader, modules: ModuleRegistry, defaults: Limits,
    on_checkpoint: Callable[[str, checkpoints.Encoded], None], compute_clock: Callable[[], float] = time.perf_counter,
) -> HostedProcess:
    """``pid`` in a fresh instance of its module, at its module's initial state (``recover`` brings it
    to its stored results), with the limits fixed at its spawn (``defaults`` where none were). Raises
    whatever stops it from loading: the worker answers its messages with that Error, and ``verify``
    expects just that."""
    record = logs.process_record(pid)
    spawn = logs.log_entry(pid, 0)
    if record is None or spawn is None:
        raise ModuleError(f"ModuleError: process {pid} has no spawn record")
    info = orjson.loads(record)
    module_id = info["module"]
    meta = modules.meta(module_id)
    if meta is None:
        raise ModuleError(f"ModuleError: module {module_id} is not in the store")
    limits = dataclasses.replace(defaults, fuel=info.get("compute_limit", defaults.fuel),
                                 memory=info.get("memory_limit", defaults.memory))
    return HostedProcess(pid, store, modules.compiled(module_id), process_env(spawn, module_id, meta), limits,
                         Evaluator(limits.fuel, max_sends=limits.max_sends, max_spawns=limits.max_spawns,
                                   max_result_bytes=limits.max_result_bytes),
                         on_checkpoint, compute_clock, logs.log_range)


def broken_reason(exc: Exception) -> str:
    """The Error every message of a process that cannot be evaluated gets, from what stopped it."""
    return str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
