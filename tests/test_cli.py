"""The actorao command, run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest


def actorao(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "actorao.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_demo_runs_and_checks_every_counter(tmp_path: Path) -> None:
    done = actorao("demo", "--path", str(tmp_path / "node"), "--processes", "5", "--messages", "300",
                   "--workers", "2", "--batch", "50")
    assert done.returncode == 0, done.stderr
    assert "check: every one of the 5 counters holds exactly what it was sent" in done.stdout
    again = actorao("demo", "--path", str(tmp_path / "node"), "--processes", "5", "--messages", "100",
                    "--workers", "1")
    assert again.returncode == 0 and "5 processes already there" in again.stdout


def test_the_demo_runs_on_tcp_with_a_cluster_key_in_the_data_folder(tmp_path: Path) -> None:
    done = actorao("demo", "--path", str(tmp_path / "node"), "--processes", "3", "--messages", "150",
                   "--workers", "2", "--schedulers", "2", "--transport", "tcp")
    assert done.returncode == 0, done.stderr
    assert "check: every one of the 3 counters holds exactly what it was sent" in done.stdout
    assert set(orjson.loads((tmp_path / "node" / "cluster.key").read_bytes())) == {"public", "secret"}
    wrong = actorao("demo", "--path", str(tmp_path / "other"), "--transport", "udp")
    assert wrong.returncode == 2 and "--transport: invalid choice: 'udp'" in wrong.stderr


def test_the_demo_runs_with_evaluation_cpus_and_a_bad_set_is_named(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        done = actorao("demo", "--path", str(tmp_path / "node"), "--processes", "3", "--messages", "150",
                       "--workers", "2", "--evaluation-cpus", str(cpus[-1]))
        assert done.returncode == 0, done.stderr
        assert "check: every one of the 3 counters holds exactly what it was sent" in done.stdout
        rest = ",".join(map(str, cpus[:-1]))
        assert f"2 workers evaluating on CPU {cpus[-1]}, the rest on {rest}, 0 processes already there" in done.stdout
    every = actorao("demo", "--path", str(tmp_path / "other"), "--evaluation-cpus", ",".join(map(str, cpus)))
    assert every.returncode == 1 and "evaluation_cpus: " in every.stderr and "leave at least one" in every.stderr
    wrong = actorao("demo", "--path", str(tmp_path / "other"), "--evaluation-cpus", "the fast ones")
    assert wrong.returncode == 1 and "evaluation_cpus: 'the fast ones' is not a CPU number" in wrong.stderr


def test_the_demo_stops_quietly_when_its_reader_has_gone(tmp_path: Path) -> None:
    # As in ``actorao demo | head -1``: the pipe is closed before the first line, so every print fails.
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "actorao.cli", "demo", "--path", str(tmp_path / "node"),
                               "--processes", "2", "--messages", "20", "--workers", "1"],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr  # 128 + SIGPIPE, as a shell reports a command that SIGPIPE ended
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr


def test_a_broken_pipe_is_taken_as_the_readers_going_only_when_standard_output_has_no_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from actorao import cli

    read, write = os.pipe()
    with os.fdopen(write, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        assert not cli._stdout_gone()  # a BrokenPipeError then came from another pipe: raised as it is
        os.close(read)
        assert cli._stdout_gone()


def test_tree_prints_the_live_supervision_tree(tmp_path: Path) -> None:
    done = actorao("tree", "--path", str(tmp_path / "node"), "--workers", "2", "--schedulers", "2")
    assert done.returncode == 0, done.stderr
    tree = orjson.loads(done.stdout)
    assert tree["id"] == "node"
    assert [child["id"] for child in tree["children"]] == ["cu-pool", "su-0", "su-1", "mu", "cron"]
    assert [worker["id"] for worker in tree["children"][0]["children"]] == ["worker-0", "worker-1"]
    assert all(isinstance(worker["pid"], int) for worker in tree["children"][0]["children"])


def test_a_process_id_that_starts_with_a_dash_is_read_as_an_id_not_an_option(tmp_path: Path) -> None:
    """One id in 64 starts with "-": argparse alone took it for an unknown option and printed usage."""
    pid = "-" + "A" * 42
    done = actorao("verify", "--path", str(tmp_path / "node"), "--workers", "1", "--schedulers", "1", pid)
    assert done.returncode == 1
    assert f"no process {pid} on this node" in done.stderr
    assert "usage:" not in done.stderr
