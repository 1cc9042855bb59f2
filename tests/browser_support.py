"""Debian's headless Chromium, driven over the DevTools protocol, and pages to serve it.

No browser is downloaded: ``Chromium`` starts ``/usr/bin/chromium`` with a fresh
profile and a DevTools port of its own choosing, attaches to its first page over a
websocket and runs scripts in it. ``PageServer`` serves one HTML page from its own
origin (``http://127.0.0.1:<port>``) in a thread of the test process.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
import websocket

from helpers import wait_until

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

#: Headless, no sandbox (tests run as root), and nothing that reaches the network on its own.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

TIMEOUT = 60.0


class DevToolsError(RuntimeError):
    """The browser answered a DevTools command with an error."""


class Chromium:
    """One headless Chromium process with a fresh profile; ``page`` is its first tab."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="gnar-chromium-"))
        self.log = open(self.profile / "chromium.log", "wb")
        self.process = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self.page = Page(self.page_websocket_url())
        except BaseException:
            self.close()
            raise

    def devtools_port(self) -> int | None:
        """The port Chromium chose; it writes it to ``DevToolsActivePort`` in the profile."""
        if self.process.poll() is not None:
            raise AssertionError(f"chromium exited {self.process.returncode}:\n{self.output()}")
        lines = (self.profile / "DevToolsActivePort").read_text().split() \
            if (self.profile / "DevToolsActivePort").exists() else []
        return int(lines[0]) if len(lines) >= 2 else None

    def page_websocket_url(self) -> str:
        port = wait_until(self.devtools_port, TIMEOUT, "Chromium's DevTools port")

        def first_page() -> str | None:
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
            return pages[0] if pages else None

        return str(wait_until(first_page, TIMEOUT, "Chromium's first page"))

    def output(self) -> str:
        self.log.flush()
        return (self.profile / "chromium.log").read_text(errors="replace")

    def close(self) -> None:
        page = getattr(self, "page", None)
        if page is not None:
            page.close()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class Page:
    """A DevTools session with one page: commands in order, events kept as they come."""

    def __init__(self, url: str) -> None:
        # Chromium refuses DevTools websockets that send an Origin it was not told to allow.
        self.socket = websocket.create_connection(url, timeout=TIMEOUT, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Log", "Runtime", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one DevTools command and return its result."""
        command_id = next(self.ids)
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == command_id:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait until the page has loaded."""
        self.events.clear()
        answer = self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise AssertionError(f"{url} did not load: {answer['errorText']}")
        self.wait_for_event("Page.loadEventFired")

    def wait_for_event(self, method: str) -> dict[str, Any]:
        while True:
            for event in self.events:
                if event["method"] == method:
                    return event
            self.events.append(json.loads(self.socket.recv()))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page, promises awaited."""
        answer = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
            timeout=TIMEOUT * 1000,
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"the page's script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def console_messages(self) -> list[str]:
        """What the page and the browser logged to the console since the last ``open``."""
        texts = [e["params"]["entry"]["text"] for e in self.events if e["method"] == "Log.entryAdded"]
        for event in self.events:
            if event["method"] == "Runtime.consoleAPICalled":
                texts.extend(str(arg.get("value", "")) for arg in event["params"]["args"])
        return texts

    def preflights(self, url: str) -> list[dict[str, Any]]:
        """The answers to the preflight requests the browser sent for ``url`` since the last ``open``.

        Each is DevTools' ``Response``: ``status``, and ``headers`` with lower-case names.
        """
        self.evaluate("0")  # the events of finished requests have arrived by now
        return [
            {**e["params"]["response"],
             "headers": {k.lower(): v for k, v in e["params"]["response"]["headers"].items()}}
            for e in self.events
            if e["method"] == "Network.responseReceived" and e["params"].get("type") == "Preflight"
            and e["params"]["response"]["url"] == url
        ]

    def close(self) -> None:
        self.socket.close()


class PageServer:
    """Serves ``html`` at ``/`` of ``http://127.0.0.1:<port>`` from a thread."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path == "/favicon.ico":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> PageServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
