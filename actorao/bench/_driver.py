"""Running the matrix: each case on a fresh node, closed-loop for throughput and ack-to-result
latency, then open-loop load sweeps for latency against load, then the baselines on the same module
calls. Everything measured here is wall-clock on this machine: the report gives ratios beside it.
"""

from __future__ import annotations

import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from actorao import Future, _cpus
from actorao._exceptions import ActoraoError, Timeout
from actorao.bench import _baselines as baselines
from actorao.bench._workloads import WORKLOADS, Prepared, Workload
from actorao.message import Assignment, Message, module_json, new_id, with_ao_tags
from actorao.node import Ack, Node, NodeConfig

CEILING_RUNS = 3  # the in-process ceiling's runs, of which the fastest is the baseline
BATCH = 250  # messages per send_many: large enough to amortise the fsync, small enough to stream
WINDOW = 4  # batches in flight at once
RESULT_TIMEOUT = 600.0


@dataclass
class Case:
    workload: str
    workers: int
    processes: int
    size: int
    messages: int
    schedulers: int | None = None  # scheduler shards; None: the node's default
    ray: bool = False  # the workers are Ray actors, on the Ray cluster the run joined
    threads: int | None = None  # each worker's evaluation threads; None: the node's default
    # NodeConfig.evaluation_cpus of the case's node (the driver's sending thread keeps off them too)
    evaluation_cpus: frozenset[int] | None = None

    @property
    def label(self) -> str:
        size = f", {self.size} B" if self.size else ""
        threads = f" of {self.threads} thread(s)" if self.threads else ""
        shards = f", {self.schedulers} shard(s)" if self.schedulers else ""
        ray = ", on Ray" if self.ray else ""
        cpus = f", evaluating on CPU {_cpus.spelled(self.evaluation_cpus)}" if self.evaluation_cpus else ""
        return f"{self.workload}: {self.processes} proc{size}, {self.workers} worker(s){threads}{shards}{ray}{cpus}"


@dataclass
class CaseResult:
    case: Case
    seconds: float
    throughput: float  # messages/s, first send to last result
    evaluations: int
    latency_ms: dict[str, float]  # p50, p99, p99.9 from acknowledgement to result
    cpu_cores: float  # CPU seconds of the node and its workers per wall second
    checkpoint_bytes: int
    spawn_seconds: float
    latency_samples: int
    # CPU microseconds per message sent, by OS process ("caller", "worker-N") and by thread of the
    # caller's process ("caller/scheduler", "caller/messenger", ...); the busiest OS process; and the
    # projected ceiling, 1 / its CPU seconds per message: how fast a box with cores to spare could go.
    cpu_us_per_message: dict[str, float] = field(default_factory=dict)
    busiest: str = ""
    projected_ceiling: float = 0.0

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.update(doc.pop("case"))
        cpus = doc.pop("evaluation_cpus")
        if cpus is not None:  # only where it was set: a run's JSON keeps its shape otherwise
            doc["evaluation_cpus"] = sorted(cpus)
        return doc


@dataclass
class SweepPoint:
    workload: str
    workers: int
    processes: int
    level: float  # fraction of the closed-loop throughput offered
    offered: float  # messages/s offered
    achieved: float  # messages/s evaluated
    latency_ms: dict[str, float]


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"p50": 0.0, "p99": 0.0, "p99.9": 0.0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0

    return {"p50": statistics.median(ordered) * 1000.0, "p99": at(0.99), "p99.9": at(0.999)}


class _Probe:
    """Ack and result times per log key. The node calls ``arrived`` on its listener thread, and the
    recorder ``acked`` on its own: each notes a whole frame or batch with one time stamp, so that what
    the bench costs per message stays out of the node's figures. They are matched per key after the
    run (``latencies``)."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, list[bytes]]] = []  # arrivals not yet folded into ``arrivals``
        self.arrivals: dict[bytes, float] = {}
        self.batches: list[tuple[float, list[Ack]]] = []
        self.count = 0  # results that arrived, a result delivered again counted once, as of the last fold
        self._unfolded = 0  # keys in ``frames``
        self.last = 0.0
        self.reached = threading.Event()
        self.target = 1 << 62
        self._lock = threading.Lock()  # results usually arrive on one thread, but may on two

    def arrived(self, keys: list[bytes]) -> None:
        now = time.perf_counter()
        with self._lock:
            self.frames.append((now, keys))
            self.last = now
            self._unfolded += len(keys)
            if self.count + self._unfolded >= self.target:
                self._fold()  # a result delivered again (after a worker restart) counts once
                if self.count >= self.target:
                    self.reached.set()

    def acked(self, at: float, acks: list[Ack]) -> None:
        self.batches.append((at, acks))

    def _fold(self) -> None:
        arrivals = self.arrivals
        for now, keys in self.frames:
            for key in keys:
                arrivals.setdefault(bytes(key), now)
        self.frames = []
        self._unfolded = 0
        self.count = len(arrivals)

    def seen(self) -> int:
        with self._lock:
            self._fold()
            return self.count

    def latencies(self, key_of: Callable[[Ack], bytes]) -> list[float]:
        """Ack-to-result times, matched by ``key_of`` (the node's ``result_key``)."""
        with self._lock:
            self._fold()
        arrivals = self.arrivals
        out = []
        for at, acks in self.batches:
            for ack in acks:
                arrived = arrivals.get(key_of(ack))
                if arrived is not None:
                    out.append(max(0.0, arrived - at))
        return out


# Threads of the node's own process, by what they do. The rest of the caller's CPU (other threads,
# and threads that ended during the case) is reported as "other".
_THREAD_ROLES = {"MainThread": "driver", "bench-acks": "driver", "su-acks": "scheduler client", "mu": "messenger",
                 "cu-results": "results listener", "cron": "cron"}


def cpu_by_role(node: Node) -> dict[str, tuple[int, float]]:
    """(OS pid, CPU seconds so far) of each OS process of the node, and of each kind of thread in the
    caller's own process: ``caller`` (this process: the driver, the messenger, the results listener
    and the shards' client), ``caller/<role>``, ``su-N`` (each scheduler shard) and ``worker-N``."""
    import psutil  # the bench extra's: imported when a bench runs, not when the CLI starts

    me = psutil.Process()
    roles: dict[str, tuple[int, float]] = {"caller": (me.pid, time.process_time())}
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    for thread in me.threads():
        known = _THREAD_ROLES.get(names.get(thread.id, ""))
        if known is None:
            continue
        role = "caller/" + known
        roles[role] = (me.pid, roles.get(role, (me.pid, 0.0))[1] + thread.user_time + thread.system_time)
    for entry in [*node.scheduler_processes(), *node.worker_processes()]:
        pid = entry.get("pid")
        if not pid:
            continue
        used = process_cpu_seconds(pid)
        if used is not None:
            roles[str(entry["id"])] = (pid, used)
    return roles


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user and system, every thread's, exited ones too) OS process ``pid`` has used, to
    the nanosecond: Linux reads another process's CPU clock by its id, ``(~pid << 3) | 2`` (process-wide,
    scheduler-precise, as glibc's clock_getcpuclockid builds it). Elsewhere, or if that clock cannot be
    read, psutil's clock-tick counts (10 ms steps, so a case of a few ms may read 0). None: it is gone."""
    import psutil

    if sys.platform == "linux":
        try:
            return time.clock_gettime((~pid << 3) | 2)
        except OSError:
            pass
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _process_cpu(roles: dict[str, tuple[int, float]]) -> float:
    return sum(used for role, (_, used) in roles.items() if "/" not in role)


def cpu_per_message(before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]],
                    messages: int) -> tuple[dict[str, float], str, float]:
    """CPU microseconds per message of each role between two ``cpu_by_role`` snapshots (a worker
    restarted meanwhile counts from its new start), the busiest OS process, and the projected ceiling
    in messages/s."""
    per: dict[str, float] = {}
    for role, (pid, seconds) in after.items():
        was_pid, was = before.get(role, (pid, 0.0))
        used = seconds - was if was_pid == pid else seconds
        per[role] = max(0.0, used) * 1e6 / max(1, messages)
    threads = sum(us for role, us in per.items() if role.startswith("caller/"))
    per["caller/other"] = max(0.0, per.get("caller", 0.0) - threads)
    processes = {role: us for role, us in per.items() if "/" not in role}
    busiest = max(processes, key=processes.__getitem__)
    return per, busiest, 1e6 / processes[busiest] if processes[busiest] > 0 else 0.0


def _settle(node: Node, prepared: Prepared) -> None:
    """Wait for everything the set-up caused (each spawn's own evaluation) to be evaluated, so that
    none of it is counted, or timed, as the workload's."""
    for pid in prepared.targets:
        node.catch_up(pid, RESULT_TIMEOUT)


def _checkpoint_bytes(node: Node) -> int:
    return node.reads.checkpoint_bytes()


class _AckRecorder:
    """Waits on batch futures in submission order (the SU commits in that order) and stamps each
    message's acknowledgement when its batch's future resolves; ``slots`` bounds batches in flight."""

    def __init__(self, node: Node, probe: _Probe, tick: Callable[[int], None], window: int) -> None:
        self.node, self.probe, self.tick = node, probe, tick
        self.slots = threading.Semaphore(window)
        self.pending: queue.SimpleQueue[Future[list[Ack]] | None] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bench-acks", daemon=True)
        self.thread.start()

    def submit(self, future: Future[list[Ack]]) -> None:
        self.pending.put(future)

    def _run(self) -> None:
        while (future := self.pending.get()) is not None:
            try:
                acks = future.get(timeout=RESULT_TIMEOUT)
            except BaseException as exc:  # reported by close(); the sender must not wait forever
                self.error = exc
                acks = []
            self.probe.acked(time.perf_counter(), acks)
            self.slots.release()
            self.tick(len(acks))

    def close(self) -> None:
        self.pending.put(None)
        self.thread.join()
        if self.error is not None:
            raise ActoraoError(f"a batch was not acknowledged: {self.error}")


@contextmanager
def _node(case: Case, root: Path, ray_here: bool = False) -> Iterator[Node]:
    """A fresh node for ``case`` in a temporary folder; with ``ray_here`` (a Ray of the run's own, on this
    machine) its Ray workers keep their stores in that folder too, and nothing is left behind."""
    with tempfile.TemporaryDirectory(dir=root) as path:
        config = NodeConfig(path=Path(path) / "node", workers=case.workers, schedulers=case.schedulers,
                            ray="auto" if case.ray else None,
                            ray_worker_path=str(Path(path) / "ray") if ray_here else None)
        if case.threads is not None:
            config = config.replace(worker_threads=case.threads)
        if case.evaluation_cpus is not None:
            config = config.replace(evaluation_cpus=case.evaluation_cpus)
        with Node(config) as node, _cpus.pinned(node.control_cpus or ()):
            yield node


def run_case(case: Case, root: Path, tick: Callable[[int], None], *, ray_here: bool = False) -> CaseResult:
    """One case on a fresh node: send ``case.messages`` in pipelined durable batches, wait for every
    evaluation they cause, check the workload's answer. ``ray_here``: the run's Ray is its own, on
    this machine."""
    workload = WORKLOADS[case.workload]
    with _node(case, root, ray_here) as node:
        started = time.perf_counter()
        prepared = workload.prepare(node, case.processes, case.size)
        _settle(node, prepared)
        spawn_seconds = time.perf_counter() - started
        probe = _Probe()
        stop_watching = node.watch_results(probe.arrived)
        try:
            expected = case.messages * prepared.evaluations_per_message
            probe.target = expected
            roles_before = cpu_by_role(node)
            cpu_before = _process_cpu(roles_before)
            began = time.perf_counter()
            recorder = _AckRecorder(node, probe, tick, WINDOW)
            try:
                for start in range(0, case.messages, BATCH):
                    batch = [prepared.message(i) for i in range(start, min(start + BATCH, case.messages))]
                    recorder.slots.acquire()
                    recorder.submit(node.send_many_nowait(batch))
            finally:
                recorder.close()
            if not probe.reached.wait(RESULT_TIMEOUT):
                raise Timeout(f"{case.label}: {probe.seen()} of {expected} evaluations after {RESULT_TIMEOUT} s")
            seconds = probe.last - began
            roles_after = cpu_by_role(node)
            cpu = _process_cpu(roles_after) - cpu_before
        finally:
            stop_watching()
        latencies = probe.latencies(node.result_key)
        prepared.check(node, case.messages)
        per_message, busiest, ceiling = cpu_per_message(roles_before, roles_after, case.messages)
        return CaseResult(
            case, seconds, case.messages / seconds, expected, percentiles(latencies),
            cpu / seconds, _checkpoint_bytes(node), spawn_seconds, len(latencies), per_message, busiest, ceiling,
        )


def run_sweep(reference: Case, ceiling_rate: float, levels: Sequence[float], duration: float, root: Path,
              tick: Callable[[int], None]) -> list[SweepPoint]:
    """Latency against load on a node like ``reference``'s (its workload, processes, workers, threads and
    shards, with local workers): offer ``level`` times the closed-loop throughput, open-loop (a batch every
    20 ms whatever the node is doing), for ``duration`` seconds per level."""
    workload_name, workers, processes = reference.workload, reference.workers, reference.processes
    workload = WORKLOADS[workload_name]
    points: list[SweepPoint] = []
    with _node(replace(reference, size=0, ray=False), root) as node:
        prepared = workload.prepare(node, processes, 0)
        _settle(node, prepared)
        sent_total = 0
        for level in levels:
            probe = _Probe()
            stop_watching = node.watch_results(probe.arrived)
            try:
                offered = ceiling_rate * level
                interval = 0.02
                per_tick = max(1, round(offered * interval))
                ticks = max(1, round(duration / interval))
                probe.target = per_tick * ticks * prepared.evaluations_per_message
                recorder = _AckRecorder(node, probe, tick, 1 << 20)  # open loop: never held back
                began = time.perf_counter()
                try:
                    for n in range(ticks):
                        batch = [prepared.message(sent_total + i) for i in range(per_tick)]
                        sent_total += per_tick
                        recorder.submit(node.send_many_nowait(batch))
                        delay = began + (n + 1) * interval - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                finally:
                    recorder.close()
                if not probe.reached.wait(RESULT_TIMEOUT):
                    raise Timeout(f"{workload_name} at {level:.0%} load: {probe.seen()} of {probe.target} evaluations")
                elapsed = max(probe.last - began, 1e-9)
                points.append(SweepPoint(workload_name, workers, processes, level, per_tick / interval,
                                         per_tick * ticks / elapsed, percentiles(probe.latencies(node.result_key))))
            finally:
                stop_watching()
        prepared.check(node, sent_total)
    return points


def module_bodies(workload: Workload, messages: int, size: int) -> tuple[list[bytes], bytes]:
    """The messages a workload's process would read, as module JSON, and an env: the baselines'
    input, the same calls the node makes."""
    owner, pid = new_id(b"bench owner"), new_id(b"bench process")
    data = "x" * size
    bodies = [
        module_json(
            Message(new_id(), owner, pid, with_ao_tags({"Action": workload.action}, "Message"), data),
            Assignment(pid, i + 1, new_id(), 1_700_000_000_000, pid),
        )
        for i in range(messages)
    ]
    env = b'{"Process":{"Id":"%s","Owner":"%s","Tags":[]}}' % (pid.encode(), owner.encode())
    return bodies, env


@dataclass
class BaselineResult:
    workload: str
    name: str
    workers: int
    processes: int
    messages: int
    throughput: float
    checksum: str


def ceiling_spread(workload_name: str, counts: Sequence[int], messages: int,
                   tick: Callable[[int], None]) -> dict[str, float]:
    """The in-process ceiling (one core, a plain loop) at each process count of ``counts``, the best of
    CEILING_RUNS each, interleaved, in msgs/s by count: how much the VM alone slows as its instances
    spread (each call then touches another instance's store and memory, cold in the CPU's caches).
    The counter target's 10,000 / 100 has this as its bound from evaluation itself."""
    workload = WORKLOADS[workload_name]
    wasm = workload.module()
    bodies, env = module_bodies(workload, messages, 0)
    best = dict.fromkeys(counts, 0.0)
    checksums: set[str] = set()
    for _ in range(CEILING_RUNS):
        for count in counts:
            run = baselines.ceiling(wasm, bodies, env, count)
            best[count] = max(best[count], run.rate)
            checksums.add(f"{count}:{run.checksum}")
            tick(messages)
    if len(checksums) != len(counts):
        raise ActoraoError("the in-process ceiling computed other results from one run to the next")
    return {str(count): rate for count, rate in best.items()}


def run_baselines(workload_name: str, workers_list: Sequence[int], processes: int, messages: int,
                  include: Sequence[str], tick: Callable[[int], None]) -> list[BaselineResult]:
    """Each baseline of ``include`` on the workload's module, for each worker count (the ceiling
    once); all must agree with the ceiling's checksum, or the comparison would be unfair."""
    workload = WORKLOADS[workload_name]
    wasm = workload.module()
    bodies, env = module_bodies(workload, messages, 0)
    out: list[BaselineResult] = []
    # The ceiling is what one core can do, so the best of a few runs: on a shared box one run swung
    # from 24k to 36k msgs/s on noop, and that alone decided whether the node met its target.
    runs = [baselines.ceiling(wasm, bodies, env, processes) for _ in range(CEILING_RUNS)]
    reference = max(runs, key=lambda run: run.rate)
    if len({run.checksum for run in runs}) != 1:
        raise ActoraoError("the in-process ceiling computed other results from one run to the next")
    out.append(BaselineResult(workload_name, reference.name, 1, processes, messages, reference.rate,
                              reference.checksum))
    tick(messages * CEILING_RUNS)
    for name in include:
        function = baselines.BASELINES[name]
        if function is baselines.ceiling:
            continue
        for workers in workers_list:
            run = function(wasm, bodies, env, workers, processes)
            tick(messages)
            if run is None:
                continue
            if run.checksum != reference.checksum:
                raise ActoraoError(f"baseline {run.name} computed other results than the ceiling")
            out.append(BaselineResult(workload_name, run.name, workers, processes, messages, run.rate, run.checksum))
    return out
