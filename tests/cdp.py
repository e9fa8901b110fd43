"""A small Chrome DevTools Protocol client for the browser tests: headless Chromium (Debian's
package) driven over ``--remote-debugging-pipe``, JSON messages ended by NUL on fds 3 and 4, so
no websocket library is needed."""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import orjson

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(AssertionError):
    """Chromium answered a command with an error, or did not answer in time."""


class Browser:
    """One headless Chromium with one page, attached. ``evaluate`` runs JavaScript in the page;
    ``wait_until`` polls a JavaScript condition until it holds, with a deadline."""

    def __init__(self, executable: str, profile: Path, width: int = 1400, height: int = 1000) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()

        def pipes_on_3_and_4() -> None:
            # In the child, before exec: the browser reads commands on fd 3 and answers on fd 4 (dup2
            # leaves them inheritable; every other fd of ours is close-on-exec). Copies above 10 first:
            # a pipe end may itself be fd 3 or 4.
            commands = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            answers = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(commands, 3)
            os.dup2(answers, 4)

        self._process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             f"--window-size={width},{height}", f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=pipes_on_3_and_4,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._write = to_browser_w
        self._read = from_browser_r
        self._next_id = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._answered = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, name="cdp-reader", daemon=True)
        self._reader.start()
        self.session = ""
        targets = self.command("Target.getTargets", session=False)["targetInfos"]
        page = next(target for target in targets if target["type"] == "page")
        self.session = self.command("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                    session=False)["sessionId"]
        self.command("Page.enable")
        self.command("Runtime.enable")

    def _read_loop(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._read, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._answered:
                    self._answered.notify_all()
                return
            buffer += chunk
            while b"\0" in buffer:
                raw, buffer = buffer.split(b"\0", 1)
                message = orjson.loads(raw)
                if "id" in message:
                    with self._answered:
                        self._answers[message["id"]] = message
                        self._answered.notify_all()

    def command(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True,
                timeout: float = 60.0) -> dict[str, Any]:
        with self._answered:
            self._next_id += 1
            number = self._next_id
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._write, orjson.dumps(message) + b"\0")
        with self._answered:
            if not self._answered.wait_for(lambda: number in self._answers or not self._reader.is_alive(), timeout):
                raise BrowserError(f"chromium did not answer {method} within {timeout} s")
            if number not in self._answers:
                raise BrowserError(f"chromium exited before answering {method}")
            answer = self._answers.pop(number)
        if "error" in answer:
            raise BrowserError(f"{method} failed: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def navigate(self, url: str) -> None:
        self.command("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        found = self.command("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                  "awaitPromise": True})
        if "exceptionDetails" in found:
            raise BrowserError(f"{expression!r} threw: {found['exceptionDetails'].get('text')} "
                               f"{found['exceptionDetails'].get('exception', {}).get('description', '')}")
        return found["result"].get("value")

    def wait_until(self, expression: str, what: str, timeout: float = 60.0) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(expression)
            except BrowserError as exc:  # e.g. the page is between documents
                last = exc
            else:
                if last:
                    return last
            time.sleep(0.1)
        raise BrowserError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

    def click(self, selector: str) -> None:
        clicked = self.evaluate(f"(() => {{ const e = document.querySelector({orjson.dumps(selector).decode()}); "
                                "if (!e) return false; e.click(); return true; })()")
        if not clicked:
            raise BrowserError(f"nothing to click at {selector}")

    def screenshot(self, path: Path) -> Path:
        data = self.command("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.command("Browser.close", session=False, timeout=10)
        except BrowserError:
            pass
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)
        os.close(self._write)
        self._reader.join(10)
        os.close(self._read)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
