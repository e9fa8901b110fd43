"""aos at a terminal, against a live ``actorao node`` OS process: driven in tmux with send-keys and read
back with capture-pane, as a person would use it.

The aos CLI on the npm registry (@permaweb/aos 1.2.18, 2023) is too old for legacy units: its MU and CU
URLs are compiled into its SDK (@permaweb/ao-sdk 0.0.22), and it evaluates with tags today's aos modules
do not read. So the console is tests/js/aos_repl.mjs: the calls current aos makes, on aoconnect, the
library aos is built on (see its header). It spawns real aos, evaluates `1 + 1`, adds a handler, and
prints what another process sends it while it waits at the prompt, as aos's live mode does: by paging
the CU's results with the cursors aos parses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from actorao import ans104
from tests.test_aoconnect import JS, live_node

SCREEN_WAIT_S = 180.0  # generous: the CI box is small and busy


class Console:
    """One tmux server of our own (its own socket), running one command in one window."""

    def __init__(self, socket: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.socket = socket
        self.env = env
        self._tmux("new-session", "-d", "-s", "aos", "-x", "200", "-y", "50", "-c", str(cwd),
                   " ".join(_quote(part) for part in command))

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=60,
                              env=self.env, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def type(self, line: str) -> None:
        self._tmux("send-keys", "-t", "aos", "-l", line)
        self._tmux("send-keys", "-t", "aos", "Enter")

    def screen(self) -> list[str]:
        text = self._tmux("capture-pane", "-J", "-p", "-S", "-200", "-t", "aos")
        return [line.rstrip() for line in text.splitlines()]

    def wait_for(self, seen: Callable[[list[str]], bool], what: str) -> list[str]:
        """Poll the screen until ``seen`` holds (a condition, not a guess at a duration)."""
        deadline = time.monotonic() + SCREEN_WAIT_S
        while time.monotonic() < deadline:
            lines = self.screen()
            if seen(lines):
                return lines
            time.sleep(0.2)
        raise AssertionError(f"the console never showed {what}:\n" + "\n".join(self.screen()))

    def answer_to(self, line: str) -> str:
        """Type ``line`` at the prompt; the line the console prints after it."""
        before = len([text for text in self.screen() if text.endswith("> " + line)])
        self.type(line)

        def answered(lines: list[str]) -> bool:
            echoes = [index for index, text in enumerate(lines) if text.endswith("> " + line)]
            return len(echoes) > before and echoes[-1] + 1 < len(lines) and lines[echoes[-1] + 1] != ""

        lines = self.wait_for(answered, f"an answer to {line!r}")
        echo = [index for index, text in enumerate(lines) if text.endswith("> " + line)][-1]
        return lines[echo + 1]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=60, check=False)


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'"


def test_aos_console_evaluates_adds_a_handler_and_prints_what_another_process_sends(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: .ci/run installs it (apt-get install tmux)")
    wallet = tmp_path / "console-wallet.json"
    ans104.save_jwk(ans104.RsaSigner.generate(), wallet)
    with live_node(tmp_path) as node:
        url, wasm = node.url, node.wasm
        env = {**os.environ, "NODE_URL": url, "AOS_WASM": str(wasm.resolve()), "WALLET": str(wallet),
               "NAME": "console", "TERM": "xterm"}
        console = Console(f"actorao-{os.getpid()}-{url.rsplit(':', 1)[1]}", ["node", "aos_repl.mjs"], env, JS)
        try:
            lines = console.wait_for(lambda lines: any("[Inbox:" in text for text in lines), "aos's prompt")
            pid = next(text for text in lines if text.startswith("aos process: ")).split(": ")[1]
            assert any(text.startswith("module 1 - wasm64-unknown-emscripten-draft_2024_02_15 - ") for text in lines)

            assert console.answer_to("1 + 1") == "2"
            handler = ('Handlers.add("ping", Handlers.utils.hasMatchingTag("Action", "Ping"), '
                       'function(msg) print("ping from " .. msg.From .. ": " .. msg.Data) end)')
            console.answer_to(handler)
            assert console.answer_to("Handlers.list[#Handlers.list].name") == "ping"

            # another process, someone else's, sends it a message while the console waits at its prompt
            cli_env = {**os.environ, "ACTORAO_URL": url, "ACTORAO_WALLET": str(tmp_path / "other-wallet.json")}

            def actorao(*args: str) -> str:
                done = subprocess.run([sys.executable, "-m", "actorao.cli", *args], env=cli_env, capture_output=True,
                                      text=True, timeout=180)
                assert done.returncode == 0, done.stderr
                return done.stdout

            module = orjson.loads(actorao("module", "add", str(wasm)))["id"]
            other = orjson.loads(actorao("spawn", module, "--tag", "Name=other"))["id"]
            actorao("send", other, "--action", "Eval", "--wait",
                    "--data", f'Send({{ Target = "{pid}", Action = "Ping", Data = "hello" }})')
            lines = console.wait_for(lambda lines: f"ping from {other}: hello" in lines, "the other process's ping")
            assert lines.count(f"ping from {other}: hello") == 1  # printed once, however often the console polls
            assert console.answer_to("#Inbox") == "1"  # handled, so not kept: only the spawn's notice is there
        finally:
            console.close()
