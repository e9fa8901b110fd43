"""The fault suite: a node in its own OS process streams messages to 100 processes while its workers
are killed with SIGKILL at random moments; then the node itself is killed mid-stream, reopened and
killed again while it recovers (during its open, and while its workers catch up), reopened and
streamed to again. After the kills, every acknowledged message must have exactly its result, once,
at its slot, and every process must pass ``verify``: a replay of its log alone in a fresh instance
gives every stored result, an unbroken hash chain and the memory its worker holds.

Bounded: a fixed number of rounds and kills, every wait with a generous deadline and no assertion on
time. ``ACTORAO_SOAK=N`` (``make soak``) runs N cycles of kills with N times the rounds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from actorao import Node
from tests.soak import SEED, SOAK

PROCESSES = 100
STREAMER = """
import sys, orjson
print(orjson.dumps({"opening": True}).decode(), flush=True)
from actorao import Node, examples
node = Node(sys.argv[1], workers=2, checkpoint_every=25)
pids = node.processes() or [node.spawn(examples.wasm("counter")) for _ in range(int(sys.argv[2]))]
print(orjson.dumps({"ready": True, "pids": pids}).decode(), flush=True)
for round_ in range(int(sys.argv[3])):
    acks = node.send_many([(pid, {"Action": "Inc"}, "") for pid in pids])
    print(orjson.dumps({"acked": [ack.id for ack in acks]}).decode(), flush=True)
node.close()
print(orjson.dumps({"closed": True}).decode(), flush=True)
"""
WAIT = 120.0  # seconds any one step may take on a busy box before the test gives up on it


def workers_of(node_pid: int) -> list[int]:
    """The CU worker processes (python -m actorao.cu) whose parent is ``node_pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == node_pid and b"actorao.cu" in argv and fields[0] != "Z":
            found.append(int(entry))
    return found


class Streamer:
    """The streaming node as a child OS process, read line by line."""

    def __init__(self, path: Path, rounds: int) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-c", STREAMER, str(path), str(PROCESSES), str(rounds)],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        self.acked: list[str] = []
        self.deadline = time.monotonic() + WAIT * 2

    def next(self) -> dict[str, Any] | None:
        """The child's next line (acknowledged ids are kept), or None once it has ended."""
        assert self.child.stdout is not None
        if time.monotonic() > self.deadline:
            raise AssertionError("the streaming node stopped making progress")
        line = self.child.stdout.readline()
        if not line:
            return None
        told: dict[str, Any] = orjson.loads(line)
        self.acked += told.get("acked", [])
        return told

    def until(self, key: str) -> bool:
        """Read until a line with ``key``; False if the child ended first."""
        while (told := self.next()) is not None:
            if key in told:
                return True
        return False

    def kill_a_worker(self, rng: random.Random) -> bool:
        victims = workers_of(self.child.pid)
        if victims:
            os.kill(rng.choice(victims), signal.SIGKILL)
        return bool(victims)

    def kill(self) -> None:
        self.child.kill()
        self.child.wait(WAIT)

    def finish(self) -> None:
        """Read to the end, then wait for the child; a clean close must exit 0."""
        while self.next() is not None:
            pass
        assert self.child.wait(WAIT) == 0


def stream(path: Path, rounds: int, kills: int, rng: random.Random, *, kill_node: bool) -> tuple[list[str], int]:
    """Stream ``rounds`` of one message per process, SIGKILLing a random worker ``kills`` times at random
    moments; with ``kill_node``, SIGKILL the node halfway instead of letting it close."""
    streamer = Streamer(path, rounds)
    made = 0
    assert streamer.until("ready")
    while (told := streamer.next()) is not None and "closed" not in told:
        if made < kills and rng.random() < 0.6:
            time.sleep(rng.uniform(0.0, 0.08))  # a random moment: mid-batch, mid-commit, idle
            made += streamer.kill_a_worker(rng)
        if kill_node and len(streamer.acked) >= PROCESSES * rounds // 2:
            streamer.kill()
            return streamer.acked, made
    assert not kill_node, "the node closed before it was killed"
    assert streamer.child.wait(WAIT) == 0
    return streamer.acked, made


def recover_and_kill(path: Path, rng: random.Random, *, during_open: bool) -> list[str]:
    """Reopen a crashed node and SIGKILL it while it recovers: with ``during_open``, a worker and then
    the node at random moments while it opens (shards and workers starting, checkpoints restoring);
    otherwise a worker as soon as it is up (its processes catching up on the log) and the node a
    batch or two later."""
    streamer = Streamer(path, rounds=4)
    assert streamer.until("opening")
    if during_open:
        time.sleep(rng.uniform(0.2, 1.5))  # a random moment of the open, not a wait for anything
        streamer.kill_a_worker(rng)
        time.sleep(rng.uniform(0.0, 0.5))
    else:
        assert streamer.until("ready")
        assert streamer.kill_a_worker(rng)
        for _ in range(rng.randint(0, 2)):
            streamer.next()
    streamer.kill()
    return streamer.acked


def check(path: Path, acked: list[str]) -> None:
    """Every acknowledged message has its result, once, at its slot; every log is whole and unrepeated,
    and every process verifies."""
    with Node(path, workers=2) as node:
        pids = node.processes()
        assert len(pids) == PROCESSES
        results = node.results(acked, timeout=WAIT)
        assert all(result.ok for result in results)
        for message_id, result in zip(acked, results, strict=True):
            key = node._logs.assignment_of(message_id)
            assert key is not None
            assert int(result.output) == int.from_bytes(key[-8:], "big")  # a counter answers its slot
        assert len(set(acked)) == len(acked)
        for pid in pids:
            log = node._logs.log_range(pid, 0, 1 << 40)
            assert [slot for slot, _ in log] == list(range(len(log)))  # no gap, no reuse
            ids = [orjson.loads(entry)["Id"] for _, entry in log]
            assert len(set(ids)) == len(ids), f"{pid}: a message assigned twice"
            report = node.verify(pid, timeout=WAIT)
            assert report.ok, report.summary()
            assert int(node.dry_run(pid, {"Action": "Get"}).output) == len(log) - 1


def test_kills_of_workers_and_of_the_node_while_streaming_and_recovering_lose_nothing(tmp_path: Path) -> None:
    print(f"random moments from seed {SEED} (ACTORAO_SOAK_SEED={SEED} repeats them)")
    rng = random.Random(SEED)
    path = tmp_path / "node"
    acked: list[str] = []
    kills = 0
    for _ in range(SOAK):
        streamed, made = stream(path, rounds=30, kills=8, rng=rng, kill_node=True)
        acked += streamed
        kills += made
        acked += recover_and_kill(path, rng, during_open=False)
        acked += recover_and_kill(path, rng, during_open=True)
        check(path, acked)
    streamed, made = stream(path, rounds=20, kills=6, rng=rng, kill_node=False)
    acked += streamed
    kills += made
    assert kills >= 8 * SOAK and len(acked) >= PROCESSES * (15 * SOAK + 20)
    check(path, acked)
