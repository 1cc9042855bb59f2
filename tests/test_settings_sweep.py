"""Every numeric and boolean setting, given a bad value, stops start-up with an error naming it.

Bad means malformed or out of range: past what the library or the system accepts.
The list below must name every such setting: a test scans flask_gnar's source for
``settings.get("NAME", parser, ...)`` calls with a numeric or boolean parser and fails
when one is missing here, and another fails when a numeric one has no upper bound.
The largest accepted values are tried too: they must work, not only pass start-up.
"""

from __future__ import annotations

import http.server
import importlib
import logging
import math
import os
import re
import signal
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from aws_support import aws  # noqa: F401 (fixture)
from flask_gnar import ConfigError, GnarHealth, GnarPeer, GnarSQS, create_app, get_state
from flask_gnar.config import MAX_WAIT_SECONDS, Bounded, parse_bool, parse_minutes
from flask_gnar.passwords import NUMERIC_SETTINGS as ARGON2_NUMERIC_SETTINGS
from flask_gnar.passwords import PARSERS as ARGON2_PARSERS
from helpers import free_port, start_process, stop, wait_for_http, wait_until

SOURCE = Path(__file__).resolve().parent.parent / "flask_gnar"

#: Past what a library or the system accepts (each would start, then fail at run time).
PAST_32_BITS = str(2**32)
PAST_THREAD_WAITS = "1e10"  # threading.TIMEOUT_MAX is about 9.2e9 seconds
PAST_STATEMENT_TIMEOUT = "2147484"  # seconds; Postgres' statement_timeout is 2**31 - 1 ms
PAST_MAX_BACKENDS = "262144"  # Postgres' MAX_BACKENDS is 2**18 - 1

#: setting (as written in the source, f-string names included) -> bad values.
BAD_VALUES: dict[str, list[str]] = {
    # state: read when an extension is used alone (create_app passes them explicitly)
    "PRODUCTION": ["maybe", "2"],
    "PORT": ["eighty", "0", "70000"],
    # log
    "LOG_JSON": ["perhaps"],
    # passwords (and ARGON2_PAST_LIMITS below)
    "ARGON2_{suffix}": ["abc", "0", "-3", "1.5", "99999999999999999999"],
    # db
    "PG_IDLE_TIMEOUT": ["soon", "-1", PAST_THREAD_WAITS, "nan"],
    "PG_CONNECT_TIMEOUT": ["soon", "0", PAST_STATEMENT_TIMEOUT, str(2**31)],
    "PG_READINESS_TIMEOUT": ["2s", "0", PAST_STATEMENT_TIMEOUT],
    "PG_MIN_CONNECTIONS": ["one", "-1", PAST_MAX_BACKENDS],
    "PG_MAX_CONNECTIONS": ["ten", "0", PAST_MAX_BACKENDS],
    "PG_PORT": ["5432x", "0", "99999"],
    "PG_MIGRATE": ["sometimes"],
    # errors
    "SEED_ERROR_STATUS": ["perhaps"],
    "ERROR_TRACEBACK": ["2"],
    "MAX_CONTENT_LENGTH": ["1MB", "0", "-1", str(sys.maxsize + 1)],
    # auth: datetime ends with the year 9999
    "JWT_ACCESS_TOKEN_EXPIRES_MINUTES": ["quarter", "0", "-5", "5000000000", "1e20", "inf"],
    # cors: HTTP's delta-seconds
    "CORS_MAX_AGE": ["forever", "0", str(2**31)],
    # sqs
    "SQS_BACKOFF_SECONDS": ["short", "0", PAST_THREAD_WAITS, "inf"],
    "SQS_BACKOFF_MAX_SECONDS": ["long", "-1", PAST_THREAD_WAITS],
    "SQS_STOP_TIMEOUT_SECONDS": ["soon", "-1", PAST_THREAD_WAITS, "nan"],
    "SQS_CONCURRENCY": ["many", "0", "1.5", "1001"],
    # peer
    "PEER_TIMEOUT_SECONDS": ["ten", "0", PAST_THREAD_WAITS],
    "EXTERNAL_TIMEOUT_SECONDS": ["ten", "-1", "1e12"],
    "PEER_RETRIES": ["twice", "-1", "1.5", "1001"],
    "PEER_BACKOFF_SECONDS": ["tiny", "-0.5", PAST_THREAD_WAITS],
    # health
    "HEALTH_ENABLED": ["perhaps"],
    # tracing
    "TRACING": ["perhaps", "2"],
    # metrics
    "METRICS": ["perhaps"],
    # serve: read by serve(), before it opens the socket
    "WORKERS": ["two", "0", "1025", "99999999999999999999"],
    "SHUTDOWN_GRACE_SECONDS": ["long", "-1", PAST_THREAD_WAITS],
    "SHUTDOWN_DELAY_SECONDS": ["short", "-1", PAST_THREAD_WAITS],
}


def memory_kib() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024


#: libargon2's 32-bit limits, its lanes, and the machine's memory.
ARGON2_PAST_LIMITS: dict[str, list[str]] = {
    "TIME_COST": [PAST_32_BITS],
    "MEMORY_COST": [str(memory_kib() + 1), PAST_32_BITS],
    "PARALLELISM": [str(2**24)],
    "HASH_LEN": [PAST_32_BITS],
    "SALT_LEN": [PAST_32_BITS],
}

#: Read when an extension is used alone on a plain Flask app.
STATE_SETTINGS = {"PRODUCTION", "PORT"}
#: Read by serve().
SERVE_SETTINGS = {"WORKERS", "SHUTDOWN_GRACE_SECONDS", "SHUTDOWN_DELAY_SECONDS"}

NUMERIC_OR_BOOLEAN_PARSER = re.compile(
    r"(?:^|_)(int|float|bool|minutes|seconds|port|number|count)(?:$|_)"
)
SETTINGS_GET = re.compile(r"settings\.get\(\s*(f?)\"([^\"]+)\"\s*,\s*(\w+)")


def settings_read_in_source() -> dict[str, Any]:
    """Each name passed to ``settings.get`` -> its parser (its name when not a module global)."""
    found: dict[str, Any] = {}
    for path in SOURCE.glob("*.py"):
        module = vars(importlib.import_module(f"flask_gnar.{path.stem}"))
        for _, name, parser in SETTINGS_GET.findall(path.read_text()):
            found[name] = module.get(parser, parser)
    return found


def is_numeric_or_boolean(parser: Any) -> bool:
    if isinstance(parser, Bounded):
        return True
    name = parser if isinstance(parser, str) else getattr(parser, "__name__", "")
    return bool(NUMERIC_OR_BOOLEAN_PARSER.search(name))


def numeric_and_boolean_settings_in_source() -> set[str]:
    """Names passed to ``settings.get`` with a numeric or boolean parser, from the source."""
    return {name for name, parser in settings_read_in_source().items() if is_numeric_or_boolean(parser)}


def concrete(setting: str) -> list[str]:
    if setting == "ARGON2_{suffix}":
        return [f"ARGON2_{suffix}" for suffix in ARGON2_NUMERIC_SETTINGS]
    return [setting]


def test_every_numeric_and_boolean_setting_is_listed() -> None:
    in_source = numeric_and_boolean_settings_in_source()
    assert {"WORKERS", "PG_MAX_CONNECTIONS", "ARGON2_{suffix}", "HEALTH_ENABLED"} <= in_source
    assert in_source - set(BAD_VALUES) == set(), "add these settings to BAD_VALUES"
    assert set(BAD_VALUES) - in_source == set(), "these settings are gone from the source"
    assert set(ARGON2_PAST_LIMITS) == set(ARGON2_NUMERIC_SETTINGS)


def test_every_numeric_setting_has_an_upper_bound() -> None:
    """A number parsed without a bound would start the service and fail at run time."""
    parsers = {
        name: parser for name, parser in settings_read_in_source().items()
        if is_numeric_or_boolean(parser) and parser is not parse_bool
    }
    parsers.pop("ARGON2_{suffix}")  # one settings.get in a loop: its parsers are these
    parsers.update({f"ARGON2_{suffix}": ARGON2_PARSERS[keyword]
                    for suffix, keyword in ARGON2_NUMERIC_SETTINGS.items()})
    unbounded = {
        name for name, parser in parsers.items()
        if not (parser is parse_minutes or isinstance(parser, Bounded) and math.isfinite(parser.high))
    }
    assert unbounded == set(), "give these settings a bounded parser"


CASES = [
    pytest.param(name, value, id=f"{name}={value}")
    for setting, values in BAD_VALUES.items()
    for name in concrete(setting)
    for value in values + ARGON2_PAST_LIMITS.get(name.removeprefix("ARGON2_"), [])
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


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("interval_seconds", 1e10),
        ("interval_seconds", float("nan")),
        ("max_number_of_messages", 11),
        ("visibility_timeout", 43201),
        ("wait_time_seconds", 21),
        ("concurrency", 1001),
        ("max_receive_count", 1001),
    ],
)
def test_a_queue_entry_out_of_range_stops_start_up_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, key: str, value: float
) -> None:
    """SQS's own limits, and no wait between polls past what a thread can wait."""
    production_env(monkeypatch)
    with pytest.raises(ConfigError) as raised:
        create_app("snowy", no_db=True, no_jwt=True,
                   sqs={"queue_name": "sweep", "callback": print, key: value})
    assert str(raised.value).startswith(f"sqs.{key}: expected "), str(raised.value)


# --- the largest accepted values are honoured, not just accepted ------------------------


def test_the_longest_sqs_waits_leave_a_poller_that_still_stops(
    aws: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A back-off of the longest wait is waited on (no OverflowError), and stop ends it."""
    thread_errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_errors.append(args.exc_value))
    app = Flask("sweep_sqs")
    app.config.update(
        GNAR_SQS_BACKOFF_SECONDS=str(MAX_WAIT_SECONDS),
        GNAR_SQS_BACKOFF_MAX_SECONDS=str(MAX_WAIT_SECONDS),
        GNAR_SQS_STOP_TIMEOUT_SECONDS=str(MAX_WAIT_SECONDS),
    )
    GnarSQS(app, queues={"queue_name": "sweep-no-such-queue", "callback": print,
                         "interval_seconds": MAX_WAIT_SECONDS})
    state = get_state(app)
    caplog.set_level(logging.WARNING, logger="flask_gnar.sqs")
    state.start()
    try:
        wait_until(lambda: f"retrying in {MAX_WAIT_SECONDS:.1f}s" in caplog.text, what="a back-off")
        assert all(poller.join(0) is False for poller in state.sqs.pollers), "the poller died"
    finally:
        state.stop()
    assert all(poller.join(10) for poller in state.sqs.pollers)
    assert thread_errors == []


def test_the_longest_grace_period_still_exits_at_once_when_idle() -> None:
    port = free_port()
    process = start_process(
        SERVE.format(port=port), GNAR_WORKERS="2", GNAR_SHUTDOWN_GRACE_SECONDS=str(MAX_WAIT_SECONDS)
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health/live", process=process)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        output = stop(process)
    assert process.returncode == 0, output
    assert "OverflowError" not in output, output


def test_the_longest_peer_timeout_is_a_socket_timeout_that_works() -> None:
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        app = Flask("sweep_peer")
        app.config.update(GNAR_EXTERNAL_TIMEOUT_SECONDS=str(MAX_WAIT_SECONDS))
        GnarPeer(app)
        with app.app_context():
            response = get_state(app).external.get(f"http://127.0.0.1:{server.server_port}/")
        assert response.text == "hello"
    finally:
        server.shutdown()
        server.server_close()


RLIMITED = textwrap.dedent("""
    import resource
    from flask import Flask
    from flask_gnar import ConfigError, GnarArgon2, create_app, serve

    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    resource.setrlimit(resource.RLIMIT_NPROC, (6, hard))
    try:
        GnarArgon2(Flask("lanes"), parallelism=7, memory_cost=1024)
    except ConfigError as error:
        print("argon2:", error)
    app = create_app("snowy", production=True, no_db=True, no_jwt=True)
    serve(app, host="127.0.0.1", port={port})
""")


def test_workers_and_lanes_stay_within_rlimit_nproc() -> None:
    """fork (and libargon2's threads) fail past RLIMIT_NPROC: refused before, by name."""
    port = free_port()
    process = start_process(RLIMITED.format(port=port), GNAR_WORKERS="7")
    try:
        process.wait(timeout=15)
    finally:
        output = stop(process)
    assert "argon2: argument for ARGON2_PARALLELISM: expected a whole number from 1 to 6 " in output, output
    assert "ConfigError: GNAR_WORKERS: expected a whole number from 1 to 6 (RLIMIT_NPROC" in output, output
    assert process.returncode == 1, output
