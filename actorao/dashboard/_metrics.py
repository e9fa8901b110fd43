"""``GET /metrics`` in Prometheus' text format. The node's counters are read from ``node.status()``
at each scrape, so they equal what ``/actorao/status`` says; latencies and HTTP statuses are
observed as they happen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from actorao.node import Node

# ack→result latency on a 2-core box runs from a millisecond (noop) to seconds (aos under load)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NodeCollector(Collector):
    """The node's counters and gauges, read when Prometheus scrapes."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        node = self.node
        status = node.status()
        for name, key, text in (
            ("actorao_assignments", "assigned", "Messages assigned a slot (durable) since the node opened"),
            ("actorao_evaluations", "evaluated", "Results that reached the node since it opened"),
            ("actorao_commits", "commits", "Group commits (one fsync each) of the scheduler shards"),
            ("actorao_worker_restarts", "restarts", "Restarts of CU worker OS processes by their supervisor"),
        ):
            yield CounterMetricFamily(name, text, value=status[key])
        yield GaugeMetricFamily("actorao_processes", "AO processes on this node", value=status["processes"])
        yield GaugeMetricFamily("actorao_unevaluated", "Messages assigned since the node opened and not yet evaluated",
                                value=max(0, status["assigned"] - status["evaluated"]))
        yield GaugeMetricFamily("actorao_workers", "CU workers configured", value=status["workers"])
        yield GaugeMetricFamily("actorao_workers_running", "CU workers running", value=status["workers_running"])
        yield GaugeMetricFamily("actorao_schedulers", "Scheduler shards", value=status["schedulers"])
        messenger = node.messenger_status()
        yield GaugeMetricFamily("actorao_messenger_backlog", "Outgoing messages waiting to be pushed",
                                value=messenger["backlog"])
        yield GaugeMetricFamily("actorao_messenger_undelivered", "Messages kept because their target is not here",
                                value=messenger["undelivered"])
        yield GaugeMetricFamily("actorao_cron_processes", "Processes that get cron ticks", value=messenger["cron"])
        yield GaugeMetricFamily("actorao_checkpoints", "Checkpoints stored (older ones are pruned)",
                                value=node.reads.checkpoint_count())
        yield GaugeMetricFamily("actorao_checkpoint_bytes", "Bytes of stored checkpoints",
                                value=node.reads.checkpoint_bytes())
        cpu = CounterMetricFamily("actorao_os_process_cpu_seconds", "CPU seconds of each worker and shard OS process",
                                  labels=["child", "pid"])
        rss = GaugeMetricFamily("actorao_os_process_resident_bytes", "Resident memory of each worker and shard",
                                labels=["child", "pid"])
        restarts = CounterMetricFamily("actorao_child_restarts", "Restarts of each supervised worker and shard",
                                       labels=["child"])
        for entry in node.worker_processes() + node.scheduler_processes():
            restarts.add_metric([str(entry["id"])], int(entry.get("restarts", 0)))
            pid = entry.get("pid")
            if not isinstance(pid, int):
                continue
            try:
                process = psutil.Process(pid)
                times, memory = process.cpu_times(), process.memory_info()
            except psutil.Error:  # it exited since the tree was read; its replacement shows next scrape
                continue
            cpu.add_metric([str(entry["id"]), str(pid)], times.user + times.system)
            rss.add_metric([str(entry["id"]), str(pid)], memory.rss)
        yield from (cpu, rss, restarts)


class Metrics:
    """One registry per app: the node's collector, the latency histogram and the HTTP status counter."""

    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(node))
        self.latency = Histogram("actorao_result_latency_seconds",
                                 "From a message's assignment timestamp to its result reaching the node (sampled)",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.responses = Counter("actorao_http_responses", "HTTP responses by method and status",
                                 ["method", "status"], registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class CountResponses:
    """ASGI middleware: counts every HTTP response by method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.responses.labels(method, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)
