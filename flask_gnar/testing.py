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

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from .embedded import (
    EmbeddedPostgres,
    LocalAWS,
    free_port,
    start_embedded_postgres,
    start_local_aws,
    stop_embedded_postgres,
    stop_local_aws,
)


@pytest.fixture(scope="session")
def gnar_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL server shared by the test session."""
    postgres = start_embedded_postgres(tmp_path_factory.mktemp("pgdata"))
    yield postgres
    stop_embedded_postgres(postgres)


@pytest.fixture(scope="session")
def gnar_aws() -> Iterator[LocalAWS]:
    """moto in server mode on 127.0.0.1 for the test session; ``reset()`` forgets every queue."""
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
