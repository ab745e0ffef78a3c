"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands on the
browser's fd 3, replies and events on its fd 4, each a JSON document ended by a NUL byte). No port, no websocket
client, nothing beyond the standard library; Debian's `chromium` package (`make tools`) is the browser.

One page stays open while a test watches it, so a test can see the page follow a run without reloading.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Nothing may reach out (closed network), and a page in a headless tab must not have its timers throttled.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage", "--hide-scrollbars",
    "--mute-audio", "--force-device-scale-factor=1", "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows", "--remote-debugging-pipe",
]

# The pipe's ends go to fds 3 and 4 (dash's redirections take single-digit fds only, hence Python).
MOVE_FDS_AND_EXEC = ("import os, sys\n"
                     "read, write = int(sys.argv[1]), int(sys.argv[2])\n"
                     "os.dup2(read, 3); os.dup2(write, 4); os.close(read); os.close(write)\n"
                     "os.execv(sys.argv[3], sys.argv[3:])\n")


class BrowserError(RuntimeError):
    pass


class Browser:
    """A headless Chromium process and its DevTools pipe."""

    def __init__(self, profile: Path, executable: Path = CHROMIUM) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = profile / "chromium.log"
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        # Far from 3 and 4, so that moving one there cannot overwrite the other.
        child_read, child_write = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_read, replies_write))
        os.close(commands_read)
        os.close(replies_write)
        command = [sys.executable, "-c", MOVE_FDS_AND_EXEC, str(child_read), str(child_write), str(executable), *FLAGS,
                   f"--user-data-dir={profile}", "about:blank"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        os.close(child_read)
        os.close(child_write)
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._commands, data):]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise BrowserError(f"no reply to {waiting_for} in time; see {self.log_path}")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium closed its DevTools pipe; see {self.log_path}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str, width: int = 1400, height: int = 1000) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        page.command("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        page.command("Page.navigate", {"url": url})
        page.wait_for("location.href !== 'about:blank' && document.readyState === 'complete'", timeout=30)
        return page

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for fd in (self._commands, self._replies):
            with contextlib.suppress(OSError):
                os.close(fd)


class Page:
    """One tab of the browser (a flattened DevTools session)."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def command(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serializable; promises are awaited)."""
        result = self.command("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                   "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, every: float = 0.2) -> Any:
        """Evaluate until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression!r} still falsy after {timeout:.0f}s")
            time.sleep(every)

    def screenshot(self) -> bytes:
        """A PNG of the whole page, not just the viewport (document coordinates = pixels at scale 1)."""
        size = self.command("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.command("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True})
        return base64.b64decode(data["data"])


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Browser]:
    browser = Browser(profile)
    try:
        yield browser
    finally:
        browser.close()
