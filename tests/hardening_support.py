"""Shared by the hardening tests: the ``hardy`` service, its SQS ledger, a gate for an endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from flask_jwt_extended import create_access_token, create_refresh_token

from flask_gnar import GnarJWT
from helpers import free_port, start_module, stop, wait_for_http

JWT_SECRET = "hardy-jwt-secret-0123456789abcdefghijklmnop"
DEADLINE = 20.0


def wait_until(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


@dataclass
class Hardy:
    """The ``hardy`` service (bjoern, production) running in its own process group."""

    port: int
    process: subprocess.Popen[str]
    output: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        if not self.output:
            self.output = stop(self.process)
        return self.output


def start_hardy(ready_path: str = "/pid", **env: str) -> Hardy:
    """Start ``hardy`` with ``env`` and wait until ``ready_path`` answers."""
    port = free_port()
    env.setdefault("GNAR_JWT_SECRET_KEY", JWT_SECRET)
    process = start_module("hardy.app.main", str(port), **env)
    service = Hardy(port, process)
    try:
        wait_for_http(f"{service.url}{ready_path}", process=process, timeout=30)
    except BaseException:
        service.stop()
        raise
    return service


def worker_pids(service: Hardy, count: int) -> set[int]:
    """Poll ``/pid`` on new connections until ``count`` different workers answered."""
    pids: set[int] = set()

    def seen_all() -> bool:
        assert service.process.poll() is None, service.stop()
        response = requests.get(f"{service.url}/pid", timeout=5, headers={"Connection": "close"})
        pids.add(response.json()["pid"])
        return len(pids) >= count

    wait_until(seen_all, what=f"{count} workers answering")
    return pids


# --- tokens -----------------------------------------------------------------------------


def token_app(secret: str = JWT_SECRET) -> Flask:
    """A plain app that signs tokens exactly as ``hardy`` does."""
    app = Flask("hardy_tokens")
    GnarJWT(app, secret_key=secret)
    return app


def access_token(identity: Any = 7, secret: str = JWT_SECRET, **kwargs: Any) -> str:
    with token_app(secret).app_context():
        return create_access_token(identity=identity, **kwargs)


def refresh_token(identity: Any = 7) -> str:
    with token_app().app_context():
        return create_refresh_token(identity=identity)


# --- the SQS ledger -------------------------------------------------------------------


@dataclass
class Ledger:
    """The lines ``hardy``'s SQS callback appended: ``start|end pid message-id body``."""

    path: Path

    def lines(self) -> list[tuple[str, int, str, str]]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            kind, pid, message_id, body = line.split(" ", 3)
            entries.append((kind, int(pid), message_id, body))
        return entries

    def ended(self) -> Counter[str]:
        """How many times each body was handled to the end."""
        return Counter(body for kind, _, _, body in self.lines() if kind == "end")

    def started(self) -> Counter[str]:
        return Counter(body for kind, _, _, body in self.lines() if kind == "start")


def queue_count(sqs: Any, url: str) -> int:
    """Messages still on the queue, visible or in flight."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def drain(sqs: Any, url: str) -> list[str]:
    """Receive (and delete) every visible message; their bodies."""
    bodies: list[str] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


# --- an endpoint that can go away ---------------------------------------------------------


@dataclass
class Gate:
    """A TCP forwarder on a fixed 127.0.0.1 port in front of ``target_port``.

    ``close()`` stops listening and cuts every open connection: clients see the
    endpoint gone (connection refused) while the server behind keeps its state.
    ``open()`` listens on the same port again.
    """

    target_port: int
    port: int = field(default_factory=free_port)
    _listener: socket.socket | None = None
    _connections: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            listener.close()
        for sock in connections:
            shut(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                if self._listener is not listener:
                    shut(client), shut(upstream)
                    return
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    shut(sink)


def shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def env_without(*prefixes: str) -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
