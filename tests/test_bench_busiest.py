"""bench/busiest.py: one measurement counts every OS process of the node, shards and workers as asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def test_one_run_counts_the_caller_each_worker_and_each_shard_and_names_the_busiest() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "busiest.py"), "--one", "--messages", "3000",
                           "--workers", "3", "--schedulers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = orjson.loads(done.stdout.strip().splitlines()[-1])
    per = run["per"]
    assert len(per) == 1 + 3 + 2 and "caller" in per  # the caller, 3 workers, 2 shards: one figure each
    assert run["busiest_us"] == round(max(per.values()), 1) > 0
    assert run["busiest"] == ("caller" if per["caller"] == max(per.values()) else "a child")
    assert run["msgs_s"] > 0
