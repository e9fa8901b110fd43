"""The operator's view of a node: ``/dashboard`` (a live page, no build step) and ``/metrics``
(Prometheus' text format), read through the node's facade and served beside AO's HTTP API."""

from __future__ import annotations

from actorao.dashboard._metrics import CountResponses, Metrics
from actorao.dashboard._routes import AdminGate, Dashboard, is_loopback
from actorao.dashboard._sampler import Sampler

__all__ = ["AdminGate", "CountResponses", "Dashboard", "Metrics", "Sampler", "is_loopback"]
