"""CU workers as Ray actors (``NodeConfig.ray``, ``actorao node --ray``): Ray starts and hosts each
worker; the node's supervision tree stays the authority on restarts.

A worker is one actor running the worker's loop (``run_worker``) in its own Ray worker process, with
``max_restarts=0``: Ray never restarts it on its own. The actor's end, however it comes (a STOP, a
crash, ``ray.kill``, its machine lost), ends the child's watcher thread with a reason, and the pool's
supervisor restarts it as it restarts an OS process, on a raylet that is left. Messages never
go through Ray (one actor call costs about 230 µs): the worker's sockets are ZeroMQ on TCP with CURVE,
and the cluster key goes to the actor as an argument of its one call, over Ray's own channel.

A Ray-placed worker never opens the node's data folder: it reads the node's logs, modules and
checkpoints from the node's data service over the network, and keeps its own store on its machine
(``_remote``). So it may run on any raylet of the cluster: the pool places each actor on the live
raylet with the fewest of its workers.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import os
from typing import Any

from actorao._ray_init import init_ray
from actorao.cu._worker import WorkerConfig, run_worker
from actorao.mailbox import ClusterKey
from actorao.supervisor import ThreadChild

START_TIMEOUT = 120.0  # seconds for Ray to place a worker's actor and start its process
PING_EVERY = 0.2  # seconds between pings: beats for the supervisor's heartbeat timeout


def ray_module() -> Any:
    """Ray, or a clear error naming the extra that brings it."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise RuntimeError("Ray-placed workers need Ray: pip install 'actorao[ray]'") from exc


def connect(address: str) -> bool:
    """Join the Ray cluster at ``address`` ("local": a Ray instance of this node's own), unless this
    process has joined one already. True if this call did, and the node shuts it down when it closes."""
    ray_module()
    return init_ray(address, logging_level=logging.WARNING)  # Ray's own "local": a new instance, always


class RayWorker:
    """The actor class: one CU worker, in the Ray worker process that hosts it."""

    def ping(self) -> bool:
        """An answer from another of the actor's threads while ``run`` runs: it is alive, and not stopped."""
        return True

    def where(self) -> tuple[int, str, str]:
        """This process's pid, its machine's address and its Ray node id."""
        ray = ray_module()
        return os.getpid(), ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()

    def run(self, config_json: str, public: bytes, secret: bytes) -> int:
        """The worker's loop, until it stops; its exit code."""
        config = WorkerConfig.from_json(config_json)
        if not config.host:
            config = dataclasses.replace(config, host=ray_module().util.get_node_ip_address())
        try:
            run_worker(config, ClusterKey(public, secret))
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return 0


def raylet_for(workers: list[dict[str, Any]], avoid: str | None = None) -> str:
    """The Ray node for one more worker: of the live ones with a CPU (other than ``avoid``, unless it
    is the only one), the one with the fewest of ``workers`` (supervision tree entries) on it; ties go
    to the lowest id."""
    alive = sorted(str(raylet["NodeID"]) for raylet in _raylets(ray_module()))
    if avoid in alive and len(alive) > 1:
        alive.remove(avoid)
    if not alive:
        raise RuntimeError("the Ray cluster has no live node with a CPU for a worker")
    used = collections.Counter(str(worker["machine"]["ray_node"]) for worker in workers if worker.get("machine"))
    return min(alive, key=lambda raylet: (used[raylet], raylet))


def _raylets(ray: Any) -> list[dict[str, Any]]:
    """The live raylets that have CPUs, as ``ray.nodes()`` describes them."""
    return [raylet for raylet in ray.nodes() if raylet["Alive"] and float(raylet["Resources"].get("CPU", 0)) > 0]


class RayChild(ThreadChild):
    """A Ray-placed worker as a supervised child, on Ray node ``raylet``. ``machine`` says where it is;
    ``pid`` is its process's pid when that is on this machine (else None: no local tool may read it)."""

    def __init__(self, config: WorkerConfig, key: ClusterKey, raylet: str) -> None:
        ray = ray_module()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._ray = ray
        actor_class = ray.remote(RayWorker)
        there = NodeAffinitySchedulingStrategy(raylet, soft=False)
        # Two threads: ``run`` holds one for the worker's life, and pings take the other.
        self.actor = actor_class.options(num_cpus=1, max_restarts=0, max_task_retries=0, max_concurrency=2,
                                         scheduling_strategy=there).remote()
        try:
            pid, ip, node_id = ray.get(self.actor.where.remote(), timeout=START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            self.kill()  # not left pending, to take a CPU from whatever frees one later
            cpus = sum(float(raylet["Resources"].get("CPU", 0)) for raylet in _raylets(ray))
            raise RuntimeError(
                f"Ray did not start worker {config.index} within {START_TIMEOUT:g} s on raylet {raylet}: each worker "
                f"takes a CPU of the cluster's raylets, which have {cpus:g} in all (fewer --workers, "
                "or more --num-cpus for ray start)") from None
        except ray.exceptions.RayActorError as exc:  # its raylet was lost as it started, say
            raise RuntimeError(f"worker {config.index}'s Ray actor died as it started on raylet {raylet}: "
                               f"{type(exc).__name__}") from exc
        here = ray.util.get_node_ip_address()
        self.pid = pid if ip == here else None
        self.machine = {"address": ip, "ray_node": node_id}
        self._run = self.actor.run.remote(config.to_json(), key.public, key.secret)
        self._beats = 0  # pings answered since the supervisor last asked (``beats``)
        self._start_thread(f"ray-worker-{config.index}")

    def beats(self) -> int:
        """The supervisor's heartbeat: pings the actor answered since the last call. A stopped (SIGSTOP)
        or wedged actor answers none, and its supervisor replaces it as it replaces an OS process."""
        beats, self._beats = self._beats, 0
        return beats

    def _serve(self) -> str | None:
        ray = self._ray
        try:
            ping = self.actor.ping.remote()
            while not ray.wait([self._run], timeout=PING_EVERY)[0]:
                if ray.wait([ping], timeout=0)[0]:  # one ping at a time: a silent actor piles none up
                    self._beats += 1
                    ping = self.actor.ping.remote()
            code = ray.get(self._run)
        except SystemExit:  # this process left Ray (ray.shutdown) while the worker ran
            return "lost: this process left Ray"
        except self._ray.exceptions.RayActorError as exc:
            # Unreachable may not mean dead: it is killed for sure before another worker takes its index.
            self.kill()
            return f"lost: its Ray actor died ({type(exc).__name__})"
        return None if code == 0 else f"exit {code}"

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the actor's end."""
        self._thread.join(timeout)

    def stop(self, timeout: float | None) -> None:
        """The pool has sent STOP: wait for the actor to finish, then end it."""
        if timeout:
            self._thread.join(timeout)
        self.kill()

    def kill(self) -> None:
        try:
            self._ray.kill(self.actor, no_restart=True)
        except Exception:  # already gone
            pass


__all__ = ["RayChild", "RayWorker", "connect", "ray_module", "raylet_for"]
