"""Local stand-ins for development and tests: an embedded Postgres and moto as AWS.

Used by the example services and by the pytest plugin (:mod:`flask_gnar.testing`).
Nothing here runs at import; every server is started by a call.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EmbeddedPostgres:
    """A running embedded PostgreSQL server."""

    uri: str
    data_dir: Path
    server: object = field(repr=False)

    @property
    def config(self) -> dict[str, str]:
        """``app.config`` settings that point GnarDB at this server."""
        return {"GNAR_PG_DSN": self.uri}

    def uri_for(self, database: str | None) -> str:
        """The URI of a database on this server (``None``: the default one)."""
        return str(self.server.get_uri(database))  # type: ignore[attr-defined]


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) a pgserver cluster in ``data_dir``.

    Raises :class:`ImportError` saying what to install when pgserver is missing.
    """
    try:
        from pgserver.postgres_server import get_server
    except ImportError as error:  # pragma: no cover - depends on the extras
        raise ImportError(
            "the embedded Postgres needs pgserver: pip install 'flask-gnar[embedded]'"
        ) from error
    server = get_server(str(data_dir), cleanup_mode="stop")
    return EmbeddedPostgres(uri=server.get_uri(), data_dir=data_dir, server=server)


def stop_embedded_postgres(postgres: EmbeddedPostgres) -> None:
    postgres.server.cleanup()  # type: ignore[attr-defined]


@dataclass
class LocalAWS:
    """moto in server mode: a real HTTP endpoint for boto3 clients."""

    endpoint_url: str
    process: subprocess.Popen[bytes] = field(repr=False)
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and flask-gnar) at the stand-in."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
        }

    def reset(self) -> None:
        """Forget every queue, message and identity."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_local_aws(port: int | None = None, timeout: float = 30.0) -> LocalAWS:
    """Start moto's server (receives made atomic, see ``_moto_server``) on 127.0.0.1."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flask_gnar._moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto.server exited with status {process.returncode}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return LocalAWS(endpoint_url=endpoint, process=process)
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"moto.server did not answer on {endpoint} within {timeout}s")


def stop_local_aws(aws: LocalAWS) -> None:
    aws.process.terminate()
    try:
        aws.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        aws.process.kill()
        aws.process.wait()
