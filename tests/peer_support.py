"""Real servers for the peer tests: the ``summit`` service under bjoern, raw TCP listeners."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self

from helpers import free_port, start_process, stop, wait_for_http

JWT_SECRET = "a-secret-shared-by-peers-0123456789"
SERVE_SUMMIT = "from summit.app.main import app; from flask_gnar import serve; serve(app, host='127.0.0.1')"
SCRUBBED_PREFIXES = ("GNAR_", "AWS_")


@dataclass
class Service:
    port: int
    process: subprocess.Popen[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def output(self) -> str:
        """Everything it logged (stops it)."""
        return stop(self.process)


@contextmanager
def summit_service(**env: str) -> Iterator[Service]:
    """The ``summit`` flask-gnar service served by bjoern (production) on a free port."""
    port = free_port()
    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith(SCRUBBED_PREFIXES)}
    try:
        process = start_process(
            SERVE_SUMMIT, SUMMIT_PORT=str(port), SUMMIT_JWT_SECRET=JWT_SECRET, **env
        )
    finally:
        os.environ.update(saved)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/hits/ready", process=process)
        yield Service(port, process)
    finally:
        stop(process)


class Listener:
    """A TCP listener on 127.0.0.1 that counts connections and hands each to ``handle``."""

    def __init__(self) -> None:
        self.accepted = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError


class RawListener(Listener):
    """Never answers. ``hang``: keeps each connection open in silence; otherwise
    closes it at once (the client sees the connection dropped without a response)."""

    def __init__(self, hang: bool) -> None:
        super().__init__()
        self.hang = hang
        self._held: list[socket.socket] = []

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for held in self._held:
            held.close()

    def handle(self, conn: socket.socket) -> None:
        if self.hang:
            self._held.append(conn)
        else:
            conn.close()


class CountingProxy(Listener):
    """Forwards TCP connections to ``target_port``: ``accepted`` is how many
    connections a client really opened to the service behind it."""

    def __init__(self, target_port: int) -> None:
        super().__init__()
        self.target_port = target_port

    def handle(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        for source, sink in ((conn, upstream), (upstream, conn)):
            threading.Thread(target=pipe, args=(source, sink), daemon=True).start()


def pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        source.close()
