"""A headless Chromium driven over the DevTools protocol, for the tests that load ComfyUI's real frontend.

No Playwright or Selenium: Chromium is started with `--remote-debugging-port=0`, its DevTools websocket is
read from stderr, and one page is spoken to with `websocket-client` (`Runtime.evaluate`, `Page.navigate`,
`Page.captureScreenshot`). Console errors and uncaught exceptions are collected as they arrive.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install Debian's chromium (`apt-get update && apt-get install -y chromium`) or set CHROMIUM to a binary"


def find_chromium() -> str | None:
    """The Chromium binary: $CHROMIUM if set (a path or a name on PATH), else the first of NAMES on PATH."""
    names = [os.environ["CHROMIUM"]] if os.environ.get("CHROMIUM") else NAMES
    return next((path for name in names if (path := shutil.which(name))), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page; close() ends the process and removes its profile."""

    def __init__(self, binary: str, width: int = 1600, height: int = 1000, timeout: float = 30) -> None:
        import websocket  # websocket-client

        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        command = [
            binary,
            "--headless=new",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
            "--disable-gpu",
            "--disable-dev-shm-usage",  # small /dev/shm in containers
            "--no-first-run",
            "--no-default-browser-check",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._stderr: list[str] = []
        self._ws = None
        self._next_id = 0
        try:
            port = re.match(r"ws://[^:]+:(\d+)/", self._read_devtools_url(timeout)).group(1)
            page = self._first_page(port, timeout)
            # suppress_origin: Chromium refuses DevTools websockets that send an Origin it was not told to allow
            self._ws = websocket.create_connection(page, timeout=timeout, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.console: list[dict] = []  # {"level", "text"} for console calls and uncaught exceptions
        for domain in ("Page", "Runtime"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _read_devtools_url(self, timeout: float) -> str:
        found: dict[str, str] = {}
        ready = threading.Event()

        def read() -> None:  # keeps draining stderr after the line is found, so Chromium never blocks on it
            for line in self.process.stderr:
                self._stderr.append(line)
                if "url" not in found and (match := re.search(r"DevTools listening on (ws://\S+)", line)):
                    found["url"] = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        ready.wait(timeout)
        if "url" not in found:
            raise BrowserError(f"Chromium did not print its DevTools URL within {timeout} s:\n{''.join(self._stderr)}")
        return found["url"]

    def _first_page(self, port: str, timeout: float) -> str:
        """The DevTools websocket of the tab Chromium opened (listed a moment after the browser's own)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pages = [p for p in _get_json(f"http://127.0.0.1:{port}/json/list") if p.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise BrowserError(f"Chromium opened no page within {timeout} s")

    # --- the protocol --------------------------------------------------------------------------------

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict:
        """Send one command and return its result; events that arrive meanwhile are recorded."""
        self._next_id += 1
        ident = self._next_id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._ws.settimeout(max(0.1, deadline - time.monotonic()))
            message = json.loads(self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method} failed: {message['error']}")
                return message["result"]
            self._record(message)
        raise BrowserError(f"{method} got no answer within {timeout} s")

    def _record(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_describe(arg) for arg in params.get("args", []))
            self.console.append({"level": params["type"], "text": text})
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.console.append({"level": "exception", "text": text})

    def evaluate(self, expression: str, timeout: float = 60) -> Any:
        """The value of a JavaScript expression (promises awaited), returned as JSON."""
        result = self.call(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript threw: {text}\nin: {expression[:500]}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, interval: float = 0.2) -> Any:
        """Poll an expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise BrowserError(f"still false after {timeout} s: {expression}")

    def navigate(self, url: str, timeout: float = 60) -> None:
        """Open a URL and wait for its load event (scripts that start later are for wait_for)."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._ws.settimeout(max(0.1, deadline - time.monotonic()))
            message = json.loads(self._ws.recv())
            if message.get("method") == "Page.loadEventFired":
                return
            self._record(message)
        raise BrowserError(f"{url} did not load within {timeout} s")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        return [e["text"] for e in self.console if e["level"] in ("error", "exception", "assert")]

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def _describe(arg: dict) -> str:
    """A console argument as text (remote objects are not fetched; their description is enough)."""
    if "value" in arg:
        return str(arg["value"])
    return arg.get("description") or arg.get("type", "")


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())
