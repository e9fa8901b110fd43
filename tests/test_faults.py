"""The fault suite: a stream over 200 processes while workers are killed with SIGKILL at random
moments, and once the whole node; then every acknowledged message must have exactly its result, and
every process's state must equal a fresh sequential replay of its log.

Bounded: a fixed number of kills and rounds, each wait with a deadline. Everything is on this machine.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from actorao import Node, examples
from actorao.cu._process import process_env
from actorao.vm import Evaluator, Instance, compile_module

PROCESSES = 200
STREAMER = """
import sys, orjson
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


def run_stream(path: Path, rounds: int, kills: int, rng: random.Random, *, kill_node: bool) -> tuple[list[str], int]:
    """Stream ``rounds`` of one message per process from a node in its own OS process, SIGKILLing a
    random worker ``kills`` times along the way; with ``kill_node``, SIGKILL the node itself at the
    end instead of letting it close. Returns the ids it acknowledged and the kills made."""
    child = subprocess.Popen(
        [sys.executable, "-c", STREAMER, str(path), str(PROCESSES), str(rounds)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert child.stdout is not None
    acked: list[str] = []
    made = 0
    try:
        assert orjson.loads(child.stdout.readline())["ready"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            told = orjson.loads(line)
            if "closed" in told:
                break
            acked += told["acked"]
            if made < kills and rng.random() < 0.6:
                time.sleep(rng.uniform(0.0, 0.08))  # a random moment: mid-batch, mid-commit, idle
                victims = workers_of(child.pid)
                if victims:
                    os.kill(rng.choice(victims), signal.SIGKILL)
                    made += 1
            if kill_node and len(acked) >= PROCESSES * rounds // 2:
                child.kill()
                break
    finally:
        if child.poll() is None and kill_node:
            child.kill()
        child.wait(60)
    return acked, made


def test_kills_of_workers_and_of_the_node_lose_nothing_acknowledged(tmp_path: Path) -> None:
    rng = random.Random(2026)
    path = tmp_path / "node"
    first, kills_first = run_stream(path, rounds=40, kills=12, rng=rng, kill_node=True)
    second, kills_second = run_stream(path, rounds=30, kills=12, rng=rng, kill_node=False)
    assert kills_first + kills_second >= 20
    assert len(first) >= PROCESSES * 10 and len(second) == PROCESSES * 30

    compiled = compile_module(examples.wasm("counter"))
    with Node(path, workers=2) as node:
        pids = node.processes()
        assert len(pids) == PROCESSES
        results = node.results(first + second, timeout=120)
        assert all(result.ok for result in results)
        # Each process's results count up with no gap or repeat: exactly one result per slot.
        outputs: dict[str, list[int]] = {}
        keys = [node._logs.assignment_of(message_id) for message_id in first + second]
        for key, result in zip(keys, results, strict=True):
            assert key is not None
            outputs.setdefault(key[:-8].decode(), []).append(int(result.output))
        for pid in pids:
            log = node._logs.log_range(pid, 0, 1 << 40)
            assert [slot for slot, _ in log] == list(range(len(log)))  # no gap, no reuse
            assert outputs[pid] == sorted(outputs[pid]) and len(set(outputs[pid])) == len(outputs[pid])
            fresh = Instance(compiled, memory_limit=1 << 30)
            evaluator = Evaluator()
            module = node.process_info(pid)["module"]
            meta = node._store.get("modules", module.encode())
            assert meta is not None
            env = process_env(log[0][1], module, meta)
            for _, message in log:  # a fresh sequential replay of the whole log
                evaluator.evaluate(fresh, message, env)
            assert node.state_digest(pid) == fresh.digest(), f"{pid} differs from a fresh replay of its log"
            assert int(node.dry_run(pid, {"Action": "Get"}).output) == len(log) - 1
