"""Fixtures and helpers shared by the AWS tests (test_sqs, test_ses, test_aws, test_faults)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from flask_gnar.testing import LocalAWS, free_port


@pytest.fixture
def aws(gnar_aws: LocalAWS, monkeypatch: pytest.MonkeyPatch) -> LocalAWS:
    """The session's moto server, reached through boto3's own environment variables."""
    for key, value in gnar_aws.env.items():
        monkeypatch.setenv(key, value)
    return gnar_aws


def queue_count(sqs: Any, url: str) -> int:
    """Messages still on the queue, visible or in flight."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


class EndpointGate:
    """A TCP forwarder on 127.0.0.1 in front of an endpoint, that can be shut and reopened.

    ``shut()`` closes the listening socket and every forwarded connection: clients are
    refused or cut, as when the endpoint is unreachable; the endpoint behind keeps its
    state. ``reopen()`` listens on the same port again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.reopen()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reopen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
            listener, self.listener = self.listener, None
        for sock in [listener, *sockets]:
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
