"""The bench baselines, on real processes, real actors and real wasmtime: each does the same, ordered work as
the in-process ceiling, which the checksum over the result JSONs proves."""

from __future__ import annotations

import hashlib
import multiprocessing
from typing import Any

import orjson
import pytest

from actorao import examples
from actorao.bench._baselines import (
    BASELINES,
    BaselineRun,
    ceiling,
    pool,
    pykka_actors,
    ray_actors,
    ray_actors_per_message,
    ray_available,
)
from actorao.message import Assignment, Message, module_json, new_id, with_ao_tags
from actorao.vm import Evaluator, Instance, compile_module

MESSAGES = 400
PROCESSES = 4
OWNER, PID = new_id(b"o"), new_id(b"p")
ENV = b'{"Process":{"Id":"%s","Owner":"%s","Tags":[]}}' % (PID.encode(), OWNER.encode())


def bodies() -> list[bytes]:
    return [
        module_json(
            Message(new_id(b"m"), OWNER, PID, with_ao_tags({"Action": "Inc"}, "Message")),
            Assignment(PID, slot, new_id(b"m"), 1_700_000_000_000, PID),
        )
        for slot in range(1, MESSAGES + 1)
    ]


@pytest.fixture(scope="module")
def work() -> tuple[bytes, list[bytes]]:
    return examples.wasm("counter"), bodies()


@pytest.fixture(scope="module")
def reference(work: tuple[bytes, list[bytes]]) -> BaselineRun:
    wasm, messages = work
    return ceiling(wasm, messages, ENV, processes=PROCESSES)


def check(run: BaselineRun, name: str, workers: int, reference: BaselineRun) -> None:
    assert (run.name, run.workers, run.messages) == (name, workers, MESSAGES)
    assert run.seconds > 0
    assert run.rate == pytest.approx(MESSAGES / run.seconds)
    assert run.checksum == reference.checksum


def test_ceiling_checksum_is_over_the_counter_outputs_in_order(
    work: tuple[bytes, list[bytes]], reference: BaselineRun
) -> None:
    wasm, messages = work
    check(reference, "in-process ceiling", 1, reference)
    # The same calls made here: each of the PROCESSES counters counts its own messages, so message i
    # answers i // PROCESSES + 1, and the checksum is over those JSONs, length-prefixed, in message order.
    compiled = compile_module(wasm)
    instances = [Instance(compiled, memory_limit=1 << 30) for _ in range(PROCESSES)]
    evaluator = Evaluator()
    results = [evaluator.evaluate(instances[i % PROCESSES], body, ENV)[0] for i, body in enumerate(messages)]
    assert [int(orjson.loads(result)["Output"]) for result in results] == [i // PROCESSES + 1 for i in range(MESSAGES)]
    digest = hashlib.sha256()
    for result in results:
        digest.update(len(result).to_bytes(8, "little") + result)
    assert digest.hexdigest() == reference.checksum
    # A different order of the same work must not give the same checksum.
    assert ceiling(wasm, messages, ENV, processes=1).checksum != reference.checksum


@pytest.mark.parametrize("workers", [1, 2])
def test_pool_does_the_ceilings_work(work: tuple[bytes, list[bytes]], reference: BaselineRun, workers: int) -> None:
    wasm, messages = work
    check(pool(wasm, messages, ENV, workers, processes=PROCESSES), "multiprocessing.Pool", workers, reference)


@pytest.mark.parametrize("workers", [1, 2])
def test_pykka_actors_do_the_ceilings_work(
    work: tuple[bytes, list[bytes]], reference: BaselineRun, workers: int
) -> None:
    wasm, messages = work
    run = pykka_actors(wasm, messages, ENV, workers, processes=PROCESSES)
    check(run, "pykka ThreadingActor", workers, reference)


@pytest.mark.parametrize(("baseline", "name"), [(ray_actors, "Ray actors"),
                                                (ray_actors_per_message, "Ray actors, a call per message")])
def test_ray_actors_do_the_ceilings_work_or_are_absent(
    work: tuple[bytes, list[bytes]], reference: BaselineRun, baseline: Any, name: str
) -> None:
    wasm, messages = work
    run = baseline(wasm, messages, ENV, 2, processes=PROCESSES)
    if not ray_available():
        assert run is None
        return
    assert run is not None
    check(run, name, 2, reference)


def test_more_workers_than_processes_and_a_bad_module(work: tuple[bytes, list[bytes]]) -> None:
    wasm, messages = work
    # Three workers for two processes: one owns nothing and gets nothing, and the work is still the same.
    expected = ceiling(wasm, messages[:40], ENV, processes=2).checksum
    assert pykka_actors(wasm, messages[:40], ENV, 3, processes=2).checksum == expected
    with pytest.raises(ValueError):
        ceiling(wasm, [], ENV)
    with pytest.raises(ValueError):
        pool(wasm, messages, ENV, 0)
    # A module that does not compile fails the pool's run (no child respawning forever) and leaves no child.
    with pytest.raises(RuntimeError, match="did not start"):
        pool(b"\0asm not really", messages[:4], ENV, 1)
    assert multiprocessing.active_children() == []


def test_baselines_are_listed_in_order() -> None:
    assert list(BASELINES) == ["in-process ceiling", "multiprocessing.Pool", "pykka ThreadingActor", "Ray actors",
                               "Ray actors, a call per message"]
    assert list(BASELINES.values()) == [ceiling, pool, pykka_actors, ray_actors, ray_actors_per_message]
