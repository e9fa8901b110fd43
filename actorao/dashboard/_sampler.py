"""The dashboard's sampler: reads ``node.status()`` once an interval, turns counters into rates, adds
each worker's CPU and RSS, and keeps the last minutes for the charts. Latency is measured from a
slot's assignment timestamp to its result reaching the node, on the node's own clock."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from actorao._exceptions import ActoraoError

if TYPE_CHECKING:
    from actorao.node import Node

log = logging.getLogger(__name__)

HISTORY_SECONDS = 600  # what the charts can show
LATENCY_WINDOW_S = 10.0  # percentiles are over the results of the last this many seconds
MAX_LATENCY_KEYS = 2000  # results timed per interval; beyond it, an even sample of them


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list (0.0 when it is empty)."""
    if not ordered:
        return 0.0
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Sampler:
    """Samples a node on a thread of its own (``start``), or when asked (``sample_now``). ``clock``
    gives each sample's time in seconds and ``interval`` the seconds between samples: a test passes
    its own. ``on_latency`` hears each measured latency, in seconds."""

    def __init__(self, node: Node, *, interval: float = 1.0, clock: Callable[[], float] = time.time,
                 on_latency: Callable[[float], None] | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"the sampling interval must be positive, got {interval!r}")
        self.node = node
        self.interval = interval
        self._clock = clock
        self._on_latency = on_latency
        self._history: deque[dict[str, Any]] = deque(maxlen=max(2, int(HISTORY_SECONDS / interval)))
        self._arrived: deque[tuple[list[bytes], float]] = deque(maxlen=10_000)  # result batches to time
        self._latencies: deque[tuple[float, float]] = deque(maxlen=50_000)  # (sample time, seconds)
        self._processes: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unwatch: Callable[[], None] | None = None
        self.seq = 0  # samples taken so far

    # -- lifetime -------------------------------------------------------------------------------
    def start(self) -> Sampler:
        """Start sampling, once; later calls do nothing. Sampling ends with ``stop`` or the node."""
        with self._lock:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name="dashboard-sampler", daemon=True)
        self._unwatch = self.node.watch_results(self._results_arrived)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        with self._changed:
            self._changed.notify_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.sample_now()
                except Exception:
                    try:
                        self.node.check_open()
                    except ActoraoError as exc:  # the node closed under the sample: we stop with it
                        log.info("dashboard sampler stops: %s", exc)
                        return
                    log.exception("dashboard sampler: a sample failed; trying again next interval")
                self._stop.wait(self.interval)
        finally:
            self.stop()

    # -- measuring ------------------------------------------------------------------------------
    def _results_arrived(self, keys: list[bytes]) -> None:
        # On the node's listener thread: note the batch and its arrival, nothing more.
        self._arrived.append((keys, self.node.config.clock()))

    def _time_results(self, now: float) -> None:
        batches = [self._arrived.popleft() for _ in range(len(self._arrived))]
        total = sum(len(keys) for keys, _ in batches)
        step = max(1, -(-total // MAX_LATENCY_KEYS))
        seen = 0
        for keys, arrived in batches:
            for key in keys:
                seen += 1
                if seen % step:
                    continue
                stamped = self.node.reads.timestamp_at(key)
                if stamped is None:
                    continue
                latency = max(0.0, arrived - stamped / 1000)
                self._latencies.append((now, latency))
                if self._on_latency is not None:
                    self._on_latency(latency)

    def _worker_usage(self, entry: dict[str, Any]) -> dict[str, Any]:
        """An OS process's CPU (% of one core since the last sample, and seconds in all) and RSS."""
        usage: dict[str, Any] = {"cpu_percent": None, "cpu_seconds": None, "rss": None}
        pid = entry.get("pid")
        if not isinstance(pid, int):
            return usage
        process = self._processes.get(pid)
        try:
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
                process.cpu_percent(None)  # the first call starts the measurement
            else:
                usage["cpu_percent"] = round(process.cpu_percent(None), 1)
            times = process.cpu_times()
            usage["cpu_seconds"] = round(times.user + times.system, 3)
            usage["rss"] = process.memory_info().rss
        except psutil.Error:  # it exited between the tree and now: its replacement shows next time
            self._processes.pop(pid, None)
        return usage

    def sample_now(self) -> dict[str, Any]:
        """Take one sample, keep it, and return it."""
        now = self._clock()
        status = self.node.status()
        messenger = self.node.messenger_status()
        hosted: dict[int, int] = {}
        for pid in self.node.processes():
            index = self.node.worker_of(pid)
            if index is not None:
                hosted[index] = hosted.get(index, 0) + 1
        workers = []
        for entry in self.node.worker_processes():
            index = int(str(entry["id"]).rpartition("-")[2])
            workers.append({"id": entry["id"], "pid": entry.get("pid"), "state": entry.get("state"),
                            "restarts": int(entry.get("restarts", 0)), "processes": hosted.get(index, 0),
                            **self._worker_usage(entry)})
        schedulers = [{"id": entry["id"], "pid": entry.get("pid"), "state": entry.get("state"),
                       "restarts": int(entry.get("restarts", 0)), **self._worker_usage(entry)}
                      for entry in self.node.scheduler_processes()]
        live = {entry["pid"] for entry in workers + schedulers}
        for gone in set(self._processes) - live:
            del self._processes[gone]
        self._time_results(now)
        while self._latencies and self._latencies[0][0] < now - LATENCY_WINDOW_S:
            self._latencies.popleft()
        ordered = sorted(latency for _, latency in self._latencies)
        with self._lock:
            previous = self._history[-1] if self._history else None
            elapsed = now - previous["time"] if previous is not None else 0.0

            def rate(name: str) -> float:
                if previous is None or elapsed <= 0:
                    return 0.0
                return round(max(0, int(status[name]) - int(previous[name])) / elapsed, 1)

            sample = {
                "seq": self.seq + 1, "time": now, "address": status["address"], "processes": status["processes"],
                "assigned": status["assigned"], "evaluated": status["evaluated"], "commits": status["commits"],
                "restarts": status["restarts"], "workers_running": status["workers_running"],
                "assigned_per_s": rate("assigned"), "evaluated_per_s": rate("evaluated"),
                "latency": {"count": len(ordered), "p50": percentile(ordered, 0.5), "p90": percentile(ordered, 0.9),
                            "p99": percentile(ordered, 0.99)},
                "messenger": messenger, "workers": workers, "schedulers": schedulers, "tree": status["tree"],
            }
            self._history.append(sample)
            self.seq += 1
            self._changed.notify_all()
        return sample

    # -- reading --------------------------------------------------------------------------------
    def history(self) -> list[dict[str, Any]]:
        """The kept samples, oldest first, without their trees (the latest sample has one)."""
        with self._lock:
            return [{key: value for key, value in sample.items() if key != "tree"} for sample in self._history]

    def after(self, seq: int, timeout: float) -> dict[str, Any] | None:
        """The latest sample if it is newer than ``seq``, waiting up to ``timeout`` seconds for one."""
        with self._changed:
            self._changed.wait_for(lambda: self.seq > seq or self._stop.is_set(), timeout)
            return self._history[-1] if self.seq > seq and self._history else None
