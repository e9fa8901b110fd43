"""bench/round_trip.py --hops: the probe of bench/hops/ finds its functions in every process of a real
node, and what it records of each trip follows the order its hops must happen in."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.hops.sitecustomize import HOOKS
from bench.round_trip import BEGIN, END, hops, rows_by_function, trips

HERE = Path(__file__).resolve().parent.parent
TRIPS = 12
_NODE = """
import sys
from pathlib import Path
from actorao import Node
from actorao.examples import wasm

with Node(Path(sys.argv[1]), workers=1, schedulers=1) as node:
    pid = node.spawn(wasm("counter"))
    for _ in range(int(sys.argv[2])):
        assert node.result(node.send(pid, {"Action": "Inc"}, ""), timeout=60).ok
"""


@pytest.mark.parametrize(("module", "qualname"), [(module, name) for module, names in HOOKS.items() for name in names])
def test_every_hooked_function_exists(module: str, qualname: str) -> None:
    """A renamed function would drop out of the table without a word: its hook must name it again."""
    owner: object = importlib.import_module(module)
    for part in qualname.split("."):
        assert hasattr(owner, part), f"bench/hops/sitecustomize.py hooks {module}.{qualname}, which is gone"
        owner = getattr(owner, part)
    assert callable(owner)


def test_the_probe_records_each_trip_in_causal_order(tmp_path: Path) -> None:
    rows = tmp_path / "rows"
    rows.mkdir()
    env = {**os.environ, "ACTORAO_HOPS_DIR": str(rows),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE / "bench" / "hops"), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", _NODE, str(tmp_path / "node"), str(TRIPS)], env=env, check=True, cwd=HERE,
                   timeout=240)
    by_function = rows_by_function(rows)
    assert {kind for kind, _ in by_function} == {"caller", "shard", "worker"}
    measured = trips(by_function, skip=2)
    assert len(measured) == TRIPS - 2

    def at(trip: dict[tuple[str, str], list[object]], kind: str, name: str, edge: int) -> int:
        row = trip.get((kind, name))
        assert row is not None, f"no {kind} {name} within a trip"
        value = row[edge]
        assert isinstance(value, int)
        return value

    for start, end, trip in measured:
        # Each step can only happen after the one before it: across processes, the clock is the machine's.
        chain = [
            at(trip, "caller", "Schedulers._send", BEGIN), at(trip, "shard", "Shard.take", BEGIN),
            at(trip, "shard", "_Replies.push_ahead", BEGIN), at(trip, "worker", "_take", END),
            at(trip, "worker", "Worker.run", BEGIN), at(trip, "worker", "Instance.call", BEGIN),
            at(trip, "worker", "Instance.call", END), at(trip, "worker", "Worker.run", END),
            at(trip, "worker", "_commit_and_report", BEGIN),
        ]
        assert chain == sorted(chain)
        acknowledged = [
            at(trip, "shard", "SchedulerUnit._commit", BEGIN), at(trip, "shard", "_Replies.durable", BEGIN),
            at(trip, "caller", "Schedulers._dispatch", BEGIN), at(trip, "caller", "Node.send", END),
        ]
        assert acknowledged == sorted(acknowledged)
        assert at(trip, "shard", "_Replies.durable", BEGIN) < at(trip, "worker", "Ahead.confirmed", BEGIN)
        assert start < chain[0] and chain[-1] < end
        call = trip[("worker", "Instance.call")][4]
        assert isinstance(call, dict) and call["cpu"] > 0  # the VM call's own counters come with it
    table = hops(by_function, skip=2)
    assert any(line.startswith("the VM call starts") for line in table)
    assert any(line.startswith("the VM call in the worker") for line in table)
    # every trip's VM call is counted once: the commit's sync ended during it, or outside it
    split = [line.split() for line in table if "the worker heard DURABLE" in line]
    assert {words[6] for words in split} <= {"during", "outside"}
    assert sum(int(words[0]) for words in split) == len(measured)
    # and each trip says whether the acknowledgement came after the evaluation ended
    late = [line.split() for line in table if line.endswith("send() returned after the worker's VM call ended")]
    assert len(late) == 1 and late[0][1:3] == ["of", str(len(measured))] and 0 <= int(late[0][0]) <= len(measured)
    assert any(line.startswith("the commit's sync, from the push ahead: p50 ") for line in table)

