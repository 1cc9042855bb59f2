"""No secret reaches a log line or an error body, even with DEBUG logging in production."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from psycopg2.extensions import make_dsn

from flask_gnar.testing import EmbeddedPostgres
from hardening_support import access_token, start_hardy
from helpers import free_port, start_module, stop

JWT_SECRET = "jwt-Secret-Sn0wCat-0123456789-abcdefghij"
DB_PASSWORD = "pg-Secret-Gr00mer-98765"
AWS_KEY_ID = "AKIAGNARSECRETKEYID7"
AWS_SECRET = "aws-Secret-Ch4irlift/abcdefghijklmnopqrstu"
SECRETS = [JWT_SECRET, DB_PASSWORD, AWS_KEY_ID, AWS_SECRET]


def secret_env(**extra: str) -> dict[str, str]:
    return {
        "GNAR_LOG_LEVEL": "DEBUG",
        "GNAR_JWT_SECRET_KEY": JWT_SECRET,
        "GNAR_SQS_ACCESS_KEY_ID": AWS_KEY_ID,
        "GNAR_SQS_SECRET_ACCESS_KEY": AWS_SECRET,
        "GNAR_SQS_REGION_NAME": "us-east-1",
        "GNAR_SQS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_MAX_ATTEMPTS": "2",
        **extra,
    }


def assert_no_secret(text: str, where: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} shows {leaked}"


@pytest.mark.slow
def test_a_production_service_at_debug_level_never_shows_a_secret(
    gnar_postgres: EmbeddedPostgres,
) -> None:
    service = start_hardy(**secret_env(
        HARDY_DB="1", GNAR_PG_DSN=make_dsn(gnar_postgres.uri, password=DB_PASSWORD),
    ))
    bodies: list[str] = []
    try:
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/db", {}),
            ("GET", "/protected", {"headers": {"Authorization": f"Bearer {access_token(secret=JWT_SECRET)}"}}),
            ("GET", "/protected", {"headers": {"Authorization": "Bearer not.a.token"}}),
            ("GET", "/protected", {"headers": {"Authorization": f"Bearer {access_token()}"}}),
            ("GET", "/crash", {}),
            ("POST", "/sqs/nowhere", {"data": "hello"}),
            ("POST", "/db/visits", {"json": {"who": "x"}}),
            ("GET", "/health/ready", {}),
        ]
        statuses = []
        for method, path, kwargs in calls:
            response = requests.request(method, f"{service.url}{path}", timeout=30, **kwargs)
            statuses.append(response.status_code)
            bodies.append(f"{response.headers}\n{response.text}")
    finally:
        output = service.stop()
    assert statuses == [200, 200, 422, 401, 500, 500, 500, 200], bodies
    assert "DEBUG" in output and "botocore" in output, "DEBUG logging was on"
    assert "Could not connect to the endpoint URL" in output, "the AWS call failed"
    assert 'relation "visits" does not exist' in output, "the database query failed"

    assert "Credential=***/" in output, "botocore logged the key id, masked"
    assert_no_secret(output, "the log")
    for body in bodies:
        assert_no_secret(body, "an answer")


@pytest.mark.parametrize(
    "bad",
    [
        {"GNAR_PG_ENDPOINT": "127.0.0.1", "GNAR_PG_PORT": "1", "GNAR_PG_DATABASE": "snow",
         "GNAR_PG_USERNAME": "snow", "GNAR_PG_PASSWORD": DB_PASSWORD},
        {"GNAR_PG_DSN": f"host=127.0.0.1 port=1 password={DB_PASSWORD} oops"},
        {"GNAR_PG_DSN": f"host=127.0.0.1 port=1 user=snow password={DB_PASSWORD}"},
    ],
    ids=["unreachable", "malformed-dsn", "unreachable-dsn"],
)
def test_a_service_that_cannot_start_never_shows_a_secret(bad: dict[str, str]) -> None:
    process = start_module("hardy.app.main", str(free_port()), **secret_env(HARDY_DB="1", **bad))
    try:
        process.wait(timeout=30)
    finally:
        output = stop(process)
    assert process.returncode == 1 and ("DatabaseUnavailable" in output or "ConfigError" in output), output
    assert_no_secret(output, "the start-up error")
