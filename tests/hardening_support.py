"""Shared by the hardening tests: the ``hardy`` service, its SQS ledger, a gate for an endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from flask_jwt_extended import create_access_token, create_refresh_token

from flask_gnar import GnarJWT
from aws_support import queue_count  # noqa: F401 (used by the hardening tests)
from helpers import child_env, free_port, kill_group, wait_for_http, wait_until  # noqa: F401

JWT_SECRET = "hardy-jwt-secret-0123456789abcdefghijklmnop"
DEADLINE = 20.0


@dataclass
class Hardy:
    """The ``hardy`` service (bjoern, production) running in its own process group.

    Its output goes to a file, not a pipe: a pipe nobody reads while the test runs
    fills up under a flood of log lines and blocks the service in ``write``.
    """

    port: int
    process: subprocess.Popen[str]
    log_path: Path
    output: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        if not self.output:
            kill_group(self.process)
            self.process.wait(timeout=10)
            self.output = self.log_path.read_text(errors="replace")
            self.log_path.unlink(missing_ok=True)
        return self.output


def start_hardy(ready_path: str = "/pid", port: int | None = None, **env: str) -> Hardy:
    """Start ``hardy`` with ``env`` (on ``port``, or a free one) and wait until ``ready_path`` answers."""
    port = port or free_port()
    env.setdefault("GNAR_JWT_SECRET_KEY", JWT_SECRET)
    handle, name = tempfile.mkstemp(prefix="hardy-", suffix=".log")
    with os.fdopen(handle, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "hardy.app.main", str(port)],
            env=child_env(**env), stdout=log_file, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
    service = Hardy(port, process, Path(name))
    try:
        wait_for_http(f"{service.url}{ready_path}", timeout=30, process=process)
    except BaseException:
        print(service.stop())
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
