"""actorao/bench/_ipc.py (bench/ipc_wake.py's, and actorao bench's beside its round trip): both transports
echo every frame, and the figures it gives are the trips' own."""

from __future__ import annotations

from pathlib import Path

from actorao.bench._ipc import measure


def test_both_transports_echo_and_each_figure_comes_from_the_trips(tmp_path: Path) -> None:
    figures = measure(11, 0.0, tmp_path)  # an echo that answered anything else would have stopped it
    assert set(figures) == {"gap_ms", "unix_p50", "unix_p90", "zmq_p50", "zmq_p90", "zmq_over_unix"}
    assert figures["gap_ms"] == 0.0
    for transport in ("unix", "zmq"):
        assert 0 < figures[f"{transport}_p50"] <= figures[f"{transport}_p90"]
    # the ratio is of the unrounded medians; the p50s are printed to the microsecond
    assert abs(figures["zmq_over_unix"] - figures["zmq_p50"] / figures["unix_p50"]) <= 0.05 * figures["zmq_over_unix"]
