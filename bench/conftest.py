"""Benchmarks, run with `make bench` (pytest-benchmark). Machines are noisy, so every figure is also
printed as a ratio to the in-process ceiling measured in the same run."""

from __future__ import annotations

import pytest

RATES: dict[str, float] = {}
CEILING = "in-process ceiling"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RATES:
        return
    terminalreporter.section("messages/s, and ratio to the in-process ceiling")
    ceiling = RATES.get(CEILING)
    for label, rate in RATES.items():
        ratio = f"{rate / ceiling:.2f}x" if ceiling else "n/a"
        terminalreporter.write_line(f"{label:<32} {rate:>10,.0f} msgs/s   {ratio}")
