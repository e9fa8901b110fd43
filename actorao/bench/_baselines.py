"""Baselines for ``actorao bench``: the same module calls as the node makes, done by other means on the same box.

Each baseline evaluates the same message bodies through the same VM path as the in-process ceiling in
bench/test_throughput.py (``compile_module``, ``Instance``, ``Evaluator().evaluate``), so the work per message
is identical and only the dispatch differs. The shared shape:

- there are ``processes`` AO processes (one instance, one wasmtime Store, each); message i goes to process
  ``i % processes`` and process p lives on worker ``p % workers``, which owns its instances;
- messages to one process are evaluated in order;
- the timer covers dispatching every message and getting every result JSON back to the caller; start-up
  (compiling, instantiating, spawning processes or actors, ``ray.init``) and one warm-up call per worker
  are done before it starts;
- ``checksum`` is SHA-256 over the result JSONs in message order, so two baselines that did the same,
  ordered work agree on it.

Every baseline cleans up on error as well: pools terminated (closed, after a clean run) and joined, actors stopped.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import multiprocessing
import multiprocessing.pool
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from actorao._config import DEFAULT_MEMORY_LIMIT
from actorao._ray_init import init_ray
from actorao.vm import CompiledModule, Evaluator, Instance, compile_module

__all__ = [
    "BASELINES",
    "CHUNK",
    "RESULT_TIMEOUT",
    "START_TIMEOUT",
    "BaselineRun",
    "ceiling",
    "pool",
    "pykka_actors",
    "ray_actors",
    "ray_available",
]

CHUNK = 64  # messages per task for the pool and per remote call for Ray: dispatch cost amortised, order kept
RESULT_TIMEOUT = 600.0  # seconds to wait for any one batch: a dead worker must fail the run, not hang it
# Seconds for every worker to be up: a child that dies while starting (e.g. a caller's __main__ without the
# ``if __name__ == "__main__"`` guard, re-run by forkserver and spawn children) is respawned by Pool forever.
START_TIMEOUT = 120.0

Item = tuple[int, int, bytes]  # (message index, process, body)


@dataclass(frozen=True, slots=True)
class BaselineRun:
    """One baseline's timed run."""

    name: str
    workers: int
    messages: int
    seconds: float
    checksum: str  # SHA-256 hex over the result JSONs in message order

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else float("inf")


class _Shard:
    """The instances one worker owns, and the one call path every baseline uses."""

    def __init__(self, compiled: CompiledModule, processes: Iterable[int], env: bytes, warm_body: bytes) -> None:
        self.instances = {p: Instance(compiled, memory_limit=DEFAULT_MEMORY_LIMIT) for p in processes}
        self.evaluator = Evaluator()
        self.env = env
        # Warm up on a throwaway instance: the owned ones must start fresh, or a stateful module (counter)
        # would answer differently here than in the ceiling and the checksums would not compare.
        self.evaluator.evaluate(Instance(compiled, memory_limit=DEFAULT_MEMORY_LIMIT), warm_body, env)

    def evaluate(self, process: int, body: bytes) -> bytes:
        return self.evaluator.evaluate(self.instances[process], body, self.env)[0]

    def run(self, items: Sequence[Item]) -> list[tuple[int, bytes]]:
        return [(index, self.evaluate(process, body)) for index, process, body in items]


def _check(bodies: Sequence[bytes], workers: int, processes: int) -> None:
    if not bodies:
        raise ValueError("a baseline needs at least one message")
    if workers < 1 or processes < 1:
        raise ValueError(f"workers and processes must be at least 1, not {workers} and {processes}")


def _owned(worker: int, workers: int, processes: int) -> list[int]:
    """The processes that live on ``worker``."""
    return list(range(worker, processes, workers))


def _items(bodies: Sequence[bytes], workers: int, processes: int) -> list[list[Item]]:
    """Each worker's messages, in message order."""
    per_worker: list[list[Item]] = [[] for _ in range(workers)]
    for index, body in enumerate(bodies):
        process = index % processes
        per_worker[process % workers].append((index, process, body))
    return per_worker


def _chunks(items: Sequence[Item], size: int = CHUNK) -> list[Sequence[Item]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _interleaved(per_worker: list[list[Sequence[Item]]]) -> list[tuple[int, Sequence[Item]]]:
    """(worker, chunk) round-robin over workers, each worker's chunks in order: all workers start at once."""
    order: list[tuple[int, Sequence[Item]]] = []
    for round_ in range(max(len(chunks) for chunks in per_worker)):
        order.extend((worker, chunks[round_]) for worker, chunks in enumerate(per_worker) if round_ < len(chunks))
    return order


def _checksum(results: Sequence[bytes | None]) -> str:
    digest = hashlib.sha256()
    for index, result in enumerate(results):
        if result is None:
            raise RuntimeError(f"message {index} got no result")
        # Length-prefixed, so the boundaries between results are part of what is compared.
        digest.update(len(result).to_bytes(8, "little"))
        digest.update(result)
    return digest.hexdigest()


def _collect(into: list[bytes | None], pairs: Iterable[tuple[int, bytes]]) -> None:
    for index, result in pairs:
        into[index] = result


# -- in-process ceiling ----------------------------------------------------------------------------


def ceiling(wasm: bytes, bodies: Sequence[bytes], env: bytes, processes: int = 1) -> BaselineRun:
    """Every message evaluated in this process, in a plain loop: no dispatch at all. One worker."""
    _check(bodies, 1, processes)
    shard = _Shard(compile_module(wasm), range(processes), env, bodies[0])
    # The loop is bench/test_throughput.py's ceiling: locals only, nothing between the messages.
    evaluate, instances = shard.evaluator.evaluate, [shard.instances[p] for p in range(processes)]
    start = time.perf_counter()
    results = [evaluate(instances[index % processes], body, env)[0] for index, body in enumerate(bodies)]
    seconds = time.perf_counter() - start
    return BaselineRun("in-process ceiling", 1, len(bodies), seconds, _checksum(results))


# -- multiprocessing.Pool --------------------------------------------------------------------------

_POOL_SHARD: _Shard | None = None  # in a pool's child: the instances it owns
_POOL_ERROR: BaseException | None = None  # in a pool's child: why its initializer failed


def _pool_init(wasm: bytes, processes: list[int], env: bytes, warm_body: bytes) -> None:
    global _POOL_SHARD, _POOL_ERROR
    # An initializer that raises makes Pool respawn the child forever and the parent hang; keep the
    # error and let the first task raise it instead.
    try:
        _POOL_SHARD = _Shard(compile_module(wasm), processes, env, warm_body)
    except BaseException as exc:
        _POOL_ERROR = exc


def _pool_shard() -> _Shard:
    if _POOL_SHARD is None:
        raise RuntimeError(f"the pool worker did not start: {_POOL_ERROR!r}") from _POOL_ERROR
    return _POOL_SHARD


def _pool_ready() -> int:
    _pool_shard()  # raises the initializer's error, if it had one
    return os.getpid()


def _pool_run(items: Sequence[Item]) -> list[tuple[int, bytes]]:
    return _pool_shard().run(items)


def _start_method() -> str:
    # Not fork: the parent may hold threads, ZeroMQ contexts and wasmtime stores, none of which survive
    # a fork. forkserver forks children from a clean server, cheaper than spawn's fresh interpreter.
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def pool(wasm: bytes, bodies: Sequence[bytes], env: bytes, workers: int, processes: int = 1) -> BaselineRun:
    """``workers`` multiprocessing pools of one process each (forkserver, or spawn where there is none).

    One pool per worker, not one ``Pool(workers)``: a shared pool hands each task to whichever child is
    free, so a process's instance could not stay in one child and its messages could not stay in order.
    A ``Pool(1)`` runs its tasks in the order they were submitted, which gives both. The wasm goes to each
    child once, through the initializer; each task is a chunk of up to CHUNK of one worker's messages as
    (index, process, body), and comes back as (index, result JSON) pairs. All tasks are submitted at once,
    round-robin over the workers, and then gathered.
    """
    _check(bodies, workers, processes)
    context = multiprocessing.get_context(_start_method())
    pools: list[multiprocessing.pool.Pool] = []
    finished = False
    try:
        for worker in range(workers):
            initargs = (wasm, _owned(worker, workers, processes), env, bodies[0])
            pools.append(context.Pool(1, initializer=_pool_init, initargs=initargs))
        # Every child is up, compiled, instantiated and warmed before the timer starts.
        for ready in [p.apply_async(_pool_ready) for p in pools]:
            ready.get(START_TIMEOUT)
        tasks = _interleaved([_chunks(items) for items in _items(bodies, workers, processes)])
        results: list[bytes | None] = [None] * len(bodies)
        start = time.perf_counter()
        pending = [pools[worker].apply_async(_pool_run, (chunk,)) for worker, chunk in tasks]
        for task in pending:
            _collect(results, task.get(RESULT_TIMEOUT))
        seconds = time.perf_counter() - start
        finished = True
    finally:
        for p in pools:
            # On error, terminate: a closed pool with a task still pending (a child that died) keeps
            # respawning children and join() would wait for ever.
            if finished:
                p.close()
            else:
                p.terminate()
        for p in pools:
            p.join()
    return BaselineRun("multiprocessing.Pool", workers, len(bodies), seconds, _checksum(results))


# -- pykka ThreadingActor --------------------------------------------------------------------------

_READY = "ready"


class _PykkaShard(pykka.ThreadingActor):
    """A thread-backed actor owning its processes' instances; it answers (process, body) with a result JSON."""

    def __init__(self, compiled: CompiledModule, processes: list[int], env: bytes, warm_body: bytes) -> None:
        super().__init__()
        self._args = (compiled, processes, env, warm_body)
        self._shard: _Shard | None = None

    def on_start(self) -> None:
        # Instantiate on the actor's own thread: its stores are used there and nowhere else.
        self._shard = _Shard(*self._args)

    def on_receive(self, message: Any) -> Any:
        if message == _READY:
            return True
        assert self._shard is not None
        process, body = message
        return self._shard.evaluate(process, body)


def pykka_actors(wasm: bytes, bodies: Sequence[bytes], env: bytes, workers: int, processes: int = 1) -> BaselineRun:
    """``workers`` pykka ThreadingActors in this process, one ask per message, gathered after all are sent.

    The actors share the GIL with each other and with the sender, which is the point of this baseline:
    only wasmtime's own calls (ctypes drops the GIL) can overlap. The module is compiled once here and
    shared; each actor instantiates its own processes on its thread.
    """
    _check(bodies, workers, processes)
    compiled = compile_module(wasm)
    refs: list[pykka.ActorRef[Any]] = []
    try:
        for worker in range(workers):
            refs.append(_PykkaShard.start(compiled, _owned(worker, workers, processes), env, bodies[0]))
        for ref in refs:
            ref.ask(_READY, timeout=START_TIMEOUT)  # on_start has run: instances made and warmed
        start = time.perf_counter()
        futures = [
            refs[(index % processes) % workers].ask((index % processes, body), block=False)
            for index, body in enumerate(bodies)
        ]
        results: list[bytes | None] = [future.get(timeout=RESULT_TIMEOUT) for future in futures]
        seconds = time.perf_counter() - start
    finally:
        for ref in refs:
            ref.stop()
    return BaselineRun("pykka ThreadingActor", workers, len(bodies), seconds, _checksum(results))


# -- Ray actors ------------------------------------------------------------------------------------


def ray_available() -> bool:
    """Whether Ray is installed (the ``actorao[ray]`` extra)."""
    return importlib.util.find_spec("ray") is not None


class _RayShard:
    """A Ray actor's body, made remote at run time so that this module imports without Ray."""

    def __init__(self, wasm: bytes, processes: list[int], env: bytes, warm_body: bytes) -> None:
        self._shard = _Shard(compile_module(wasm), processes, env, warm_body)

    def ready(self) -> int:
        return os.getpid()

    def run(self, items: Sequence[Item]) -> list[tuple[int, bytes]]:
        return self._shard.run(items)


def ray_actors(
    wasm: bytes, bodies: Sequence[bytes], env: bytes, workers: int, processes: int = 1, *, chunk: int = CHUNK
) -> BaselineRun | None:
    """``workers`` Ray actors (one CPU each), or None when Ray is not installed.

    Batched: each remote call carries a chunk of up to CHUNK (64) of one actor's messages as (index,
    process, body) and returns (index, result JSON) pairs, since one call per message would measure Ray's
    per-call cost (hundreds of microseconds) rather than an actor system doing this work. All calls are
    submitted at once, round-robin over the actors (Ray runs one caller's calls to an actor in order),
    and then gathered. Ray is started with ``num_cpus=max(workers, os.cpu_count())`` so every actor gets
    its CPU, and shut down afterwards if this call started it.
    """
    _check(bodies, workers, processes)
    try:
        ray: Any = importlib.import_module("ray")
    except ImportError:
        return None
    # Not Ray's start-up chatter in the middle of a bench report; and this process's wasm traps kept.
    started = init_ray("local", num_cpus=max(workers, os.cpu_count() or 1), logging_level=logging.ERROR)
    actors: list[Any] = []
    try:
        remote_class = ray.remote(num_cpus=1)(_RayShard)
        wasm_ref = ray.put(wasm)  # stored once, not once per actor
        for worker in range(workers):
            actors.append(remote_class.remote(wasm_ref, _owned(worker, workers, processes), env, bodies[0]))
        ray.get([actor.ready.remote() for actor in actors], timeout=START_TIMEOUT)
        tasks = _interleaved([_chunks(items, chunk) for items in _items(bodies, workers, processes)])
        results: list[bytes | None] = [None] * len(bodies)
        start = time.perf_counter()
        pending = [actors[worker].run.remote(part) for worker, part in tasks]
        for pairs in ray.get(pending, timeout=RESULT_TIMEOUT):
            _collect(results, pairs)
        seconds = time.perf_counter() - start
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    name = "Ray actors" if chunk > 1 else "Ray actors, a call per message"
    return BaselineRun(name, workers, len(bodies), seconds, _checksum(results))


def ray_actors_per_message(
    wasm: bytes, bodies: Sequence[bytes], env: bytes, workers: int, processes: int = 1
) -> BaselineRun | None:
    """Ray actors used as actors are: one remote call per message (all in flight at once), which is
    how an actor system is compared message for message; ``ray_actors`` batches 64 to a call."""
    return ray_actors(wasm, bodies, env, workers, processes, chunk=1)


BASELINES: dict[str, Callable[..., BaselineRun | None]] = {
    "in-process ceiling": ceiling,
    "multiprocessing.Pool": pool,
    "pykka ThreadingActor": pykka_actors,
    "Ray actors": ray_actors,
    "Ray actors, a call per message": ray_actors_per_message,
}
