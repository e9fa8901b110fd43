"""Benchmarks run with `make bench` (pytest-benchmark). Figures are compared as ratios within one run."""
