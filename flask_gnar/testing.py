"""A pytest plugin for services built on flask-gnar (loaded through the ``pytest11`` entry point).

Fixtures:

``gnar_postgres``
    A real, embedded PostgreSQL server (``pgserver``) for the test session.
``gnar_aws``
    A local AWS stand-in (moto in server mode, a separate process on 127.0.0.1).
``gnar_create_app``
    ``gnar_create_app(name, **create_app_arguments)``: :func:`~flask_gnar.create_app`
    with ``TESTING`` on, its database on ``gnar_postgres`` (unless ``no_db=True``),
    its AWS clients on ``gnar_aws`` and a JWT secret for the test.
``gnar_app``
    The app of the package named by the ``gnar_app`` ini option (``gnar_app = piste``
    in ``pytest.ini``), built with ``gnar_create_app``. Return it from an ``app``
    fixture to use pytest-flask's ``client``.
``gnar_auth_headers``
    ``gnar_auth_headers(identity, **claims)``: ``{"Authorization": "Bearer ..."}``
    with an access token ``gnar_app`` accepts.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask


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


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) a pgserver cluster in ``data_dir``."""
    try:
        from pgserver.postgres_server import get_server
    except ImportError as error:  # pragma: no cover - depends on the extras
        raise RuntimeError(
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
    """Start ``moto.server`` in a subprocess on 127.0.0.1 and wait until it answers."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
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


@pytest.fixture(scope="session")
def gnar_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL server shared by the test session."""
    postgres = start_embedded_postgres(tmp_path_factory.mktemp("pgdata"))
    yield postgres
    stop_embedded_postgres(postgres)


@pytest.fixture(scope="session")
def gnar_aws() -> Iterator[LocalAWS]:
    """moto in server mode on 127.0.0.1 for the test session (``reset()`` between tests)."""
    aws = start_local_aws()
    yield aws
    stop_local_aws(aws)


TEST_JWT_SECRET = "flask-gnar-test-secret-of-at-least-32-bytes"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("gnar_app", "the package (holding app/) that the gnar_app fixture builds")


@pytest.fixture
def gnar_create_app(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Flask]:
    """Build apps with create_app, wired to the embedded Postgres and the AWS stand-in."""
    from flask_gnar import create_app

    def build(name: str, **arguments: Any) -> Flask:
        config = {"TESTING": True, "GNAR_JWT_SECRET_KEY": TEST_JWT_SECRET, **arguments.pop("config", {})}
        if not arguments.get("no_db"):
            postgres: EmbeddedPostgres = request.getfixturevalue("gnar_postgres")
            config.setdefault("GNAR_PG_DSN", postgres.uri)
        aws: LocalAWS = request.getfixturevalue("gnar_aws")
        for key, value in aws.env.items():
            monkeypatch.setenv(key, value)
        return create_app(name, config=config, **arguments)

    return build


@pytest.fixture
def gnar_app(request: pytest.FixtureRequest, gnar_create_app: Callable[..., Flask]) -> Flask:
    """The app of the package named by the ``gnar_app`` ini option."""
    name = request.config.getini("gnar_app")
    if not name:
        raise pytest.UsageError(
            "the gnar_app fixture needs the package name: add 'gnar_app = <package>' to the "
            "[pytest] section of your pytest.ini (or use gnar_create_app)"
        )
    return gnar_create_app(str(name))


@pytest.fixture
def gnar_auth_headers(gnar_app: Flask) -> Callable[..., dict[str, str]]:
    """Headers carrying an access token for ``identity`` that ``gnar_app`` accepts."""
    from flask_jwt_extended import create_access_token

    def headers(identity: Any, **claims: Any) -> dict[str, str]:
        with gnar_app.app_context():
            token = create_access_token(identity=identity, additional_claims=claims)
        return {"Authorization": f"Bearer {token}"}

    return headers


__all__ = [
    "EmbeddedPostgres",
    "LocalAWS",
    "free_port",
    "gnar_app",
    "gnar_auth_headers",
    "gnar_aws",
    "gnar_create_app",
    "gnar_postgres",
    "start_embedded_postgres",
    "start_local_aws",
    "stop_embedded_postgres",
    "stop_local_aws",
]
