"""Every numeric and boolean setting, given a bad value, stops start-up with an error naming it.

The list below must name every such setting: a test scans flask_gnar's source for
``settings.get("NAME", parser, ...)`` calls with a numeric or boolean parser and fails
when one is missing here.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from flask import Flask

from flask_gnar import ConfigError, GnarHealth, create_app
from flask_gnar.passwords import NUMERIC_SETTINGS as ARGON2_NUMERIC_SETTINGS
from helpers import free_port, start_process, stop

SOURCE = Path(__file__).resolve().parent.parent / "flask_gnar"

#: setting (as written in the source, f-string names included) -> bad values.
BAD_VALUES: dict[str, list[str]] = {
    # state: read when an extension is used alone (create_app passes them explicitly)
    "PRODUCTION": ["maybe", "2"],
    "PORT": ["eighty", "0", "70000"],
    # log
    "LOG_JSON": ["perhaps"],
    # passwords
    "ARGON2_{suffix}": ["abc", "0", "-3", "1.5"],
    # db
    "PG_IDLE_TIMEOUT": ["soon", "-1"],
    "PG_CONNECT_TIMEOUT": ["soon", "0"],
    "PG_READINESS_TIMEOUT": ["2s", "0"],
    "PG_MIN_CONNECTIONS": ["one", "-1"],
    "PG_MAX_CONNECTIONS": ["ten", "0"],
    "PG_PORT": ["5432x", "0", "99999"],
    # errors
    "SEED_ERROR_STATUS": ["perhaps"],
    "ERROR_TRACEBACK": ["2"],
    "MAX_CONTENT_LENGTH": ["1MB", "0", "-1"],
    # auth
    "JWT_ACCESS_TOKEN_EXPIRES_MINUTES": ["quarter", "0", "-5"],
    # cors
    "CORS_MAX_AGE": ["forever", "0"],
    # sqs
    "SQS_BACKOFF_SECONDS": ["short", "0"],
    "SQS_BACKOFF_MAX_SECONDS": ["long", "-1"],
    "SQS_STOP_TIMEOUT_SECONDS": ["soon", "-1"],
    # peer
    "PEER_TIMEOUT_SECONDS": ["ten", "0"],
    "EXTERNAL_TIMEOUT_SECONDS": ["ten", "-1"],
    "PEER_RETRIES": ["twice", "-1", "1.5"],
    "PEER_BACKOFF_SECONDS": ["tiny", "-0.5"],
    # health
    "HEALTH_ENABLED": ["perhaps"],
    # metrics
    "METRICS": ["perhaps"],
    # serve: read by serve(), before it opens the socket
    "WORKERS": ["two", "0"],
    "SHUTDOWN_GRACE_SECONDS": ["long", "-1"],
    "SHUTDOWN_DELAY_SECONDS": ["short", "-1"],
}

#: Read when an extension is used alone on a plain Flask app.
STATE_SETTINGS = {"PRODUCTION", "PORT"}
#: Read by serve().
SERVE_SETTINGS = {"WORKERS", "SHUTDOWN_GRACE_SECONDS", "SHUTDOWN_DELAY_SECONDS"}

NUMERIC_OR_BOOLEAN_PARSER = re.compile(r"(?:^|_)(int|float|bool|minutes|seconds|port)(?:$|_)")
SETTINGS_GET = re.compile(r"settings\.get\(\s*(f?)\"([^\"]+)\"\s*,\s*(\w+)")


def numeric_and_boolean_settings_in_source() -> set[str]:
    """Names passed to ``settings.get`` with a numeric or boolean parser, from the source."""
    found = set()
    for path in SOURCE.glob("*.py"):
        for _, name, parser in SETTINGS_GET.findall(path.read_text()):
            if NUMERIC_OR_BOOLEAN_PARSER.search(parser):
                found.add(name)
    return found


def concrete(setting: str) -> list[str]:
    if setting == "ARGON2_{suffix}":
        return [f"ARGON2_{suffix}" for suffix in ARGON2_NUMERIC_SETTINGS]
    return [setting]


def test_every_numeric_and_boolean_setting_is_listed() -> None:
    in_source = numeric_and_boolean_settings_in_source()
    assert {"WORKERS", "PG_MAX_CONNECTIONS", "ARGON2_{suffix}", "HEALTH_ENABLED"} <= in_source
    assert in_source - set(BAD_VALUES) == set(), "add these settings to BAD_VALUES"
    assert set(BAD_VALUES) - in_source == set(), "these settings are gone from the source"


CASES = [
    pytest.param(name, value, id=f"{name}={value}")
    for setting, values in BAD_VALUES.items()
    for name in concrete(setting)
    for value in values
]


def production_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything production needs, pointing at nothing: start-up fails on the bad value first."""
    for key, value in {
        "GNAR_JWT_SECRET_KEY": "sweep-secret-0123456789abcdefghijklmnop",
        "GNAR_PG_ENDPOINT": "127.0.0.1",
        "GNAR_PG_PORT": str(free_port()),
        "GNAR_PG_DATABASE": "sweep",
        "GNAR_PG_USERNAME": "sweep",
        "GNAR_PG_CONNECT_TIMEOUT": "1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(("name", "value"), [case for case in CASES if case.values[0] not in SERVE_SETTINGS])
def test_a_bad_value_stops_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    production_env(monkeypatch)
    monkeypatch.setenv(f"GNAR_{name}", value)
    with pytest.raises(ConfigError) as raised:
        if name in STATE_SETTINGS:
            GnarHealth(Flask("sweep"))
        else:
            create_app(
                "snowy", production=True, no_db=not name.startswith("PG_"),
                blueprint_modules="lifts",
                sqs={"queue_name": "sweep", "callback": print},
            )
    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith(f"GNAR_{name}: "), str(raised.value)


SERVE = textwrap.dedent("""
    from flask_gnar import create_app, serve
    app = create_app("snowy", production=True, no_db=True, no_jwt=True)
    serve(app, host="127.0.0.1", port={port})
""")


@pytest.mark.parametrize(("name", "value"), [case for case in CASES if case.values[0] in SERVE_SETTINGS])
def test_a_bad_serving_value_stops_serve_before_it_listens(name: str, value: str) -> None:
    """With two workers, a value first read after the fork would fail in every worker, forever."""
    port = free_port()
    process = start_process(SERVE.format(port=port), **{"GNAR_WORKERS": "2", f"GNAR_{name}": value})
    try:
        process.wait(timeout=15)
    finally:
        output = stop(process)
    assert process.returncode == 1, output
    assert f"ConfigError: GNAR_{name}: " in output, output
    assert "Supervisor" not in output and "is up" not in output
