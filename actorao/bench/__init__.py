"""``actorao bench``: a workload matrix over worker counts, process counts and message sizes, with
baselines measured in the same run, written out as results.json, report.md and PNG plots."""

from __future__ import annotations
