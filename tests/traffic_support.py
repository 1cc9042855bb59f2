"""Client traffic for the shutdown and rolling-restart tests, with every outcome classified.

Each client thread sends GET ``/pid`` and POST ``/echo`` (with a JSON body) in turn, either
on a new connection per request or on one keep-alive connection, and records what
happened: ``ok`` (200 and the right body), ``503`` (a clean refusal while shutting down),
``refused`` (nothing listens any more), or a failure: ``reset``, ``timeout``, ``dropped``
(closed without an answer), ``bad`` (a wrong status or body).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

FAILURES = ("reset", "timeout", "dropped", "bad")


@dataclass
class Outcome:
    at: float
    kind: str
    detail: str = ""


@dataclass
class Traffic:
    """``new`` clients open a connection per request; ``keep_alive`` clients reuse one."""

    port: int
    new: int = 4
    keep_alive: int = 0
    stop_when_refused: bool = True
    timeout: float = 15.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        kinds = [False] * self.new + [True] * self.keep_alive
        self._threads = [
            threading.Thread(target=self._client, args=(number, reuse), daemon=True)
            for number, reuse in enumerate(kinds)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def wait_until_stopped(self, timeout: float = 40.0) -> None:
        """Wait for clients that stop by themselves (on ``refused``)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self._threads), self.summary()

    def count(self, kind: str = "ok", since: float = 0.0) -> int:
        return sum(1 for outcome in list(self.outcomes) if outcome.kind == kind and outcome.at > since)

    def summary(self) -> Counter[str]:
        return Counter(outcome.kind for outcome in list(self.outcomes))

    def failures(self) -> list[Outcome]:
        return [outcome for outcome in list(self.outcomes) if outcome.kind in FAILURES]

    def _client(self, number: int, reuse: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        index = 0
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            index += 1
            kind, detail, closed = self._one(connection, number, index, reuse)
            self.outcomes.append(Outcome(time.monotonic(), kind, detail))
            if closed or not reuse:
                connection.close()
                connection = None
            if kind == "refused" and self.stop_when_refused:
                return
        if connection is not None:
            connection.close()

    def _one(
        self, connection: http.client.HTTPConnection, number: int, index: int, reuse: bool
    ) -> tuple[str, str, bool]:
        headers = {} if reuse else {"Connection": "close"}
        body = {"client": number, "index": index}
        try:
            if index % 2:
                connection.request("GET", "/pid", headers=headers)
            else:
                headers["Content-Type"] = "application/json"
                connection.request("POST", "/echo", body=json.dumps(body), headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except ConnectionRefusedError:
            return "refused", "", True
        except (ConnectionResetError, BrokenPipeError) as error:
            return "reset", repr(error), True
        except (socket.timeout, TimeoutError) as error:
            return "timeout", repr(error), True
        except (http.client.RemoteDisconnected, http.client.IncompleteRead) as error:
            return "dropped", repr(error), True
        closed = response.will_close
        if response.status == 503:
            return "503", payload.decode(errors="replace"), True
        if response.status != 200:
            return "bad", f"{response.status} {payload[:200]!r}", closed
        answer = json.loads(payload)
        right = "pid" in answer if index % 2 else answer == {"echo": body}
        return ("ok", "", closed) if right else ("bad", repr(answer), closed)
