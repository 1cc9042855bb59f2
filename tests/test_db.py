"""GnarDB against real Postgres servers: the shared embedded one, and one of its own to stop."""

from __future__ import annotations

import logging
import signal
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import postgres
import psycopg2.errors
import pytest
import requests
from flask import Flask, jsonify, request
from psycopg2.extensions import make_dsn

from db_support import CuttingProxy, OwnPostgres, start_own_postgres, stop_own_postgres
from flask_gnar import (
    ConfigError,
    DatabaseUnavailable,
    GnarDB,
    create_app,
    get_state,
    gnar,
    signals,
)
from flask_gnar.testing import EmbeddedPostgres
from helpers import free_port, start_process, stop, wait_for_http

SECRET = "Sn0w-b4ll-p@ss w0rd"


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnPostgres]:
    server = start_own_postgres(tmp_path_factory.mktemp("own-pgdata"))
    yield server
    stop_own_postgres(server)


@pytest.fixture
def running_own_postgres(own_postgres: OwnPostgres) -> OwnPostgres:
    """The separate server, started again if an earlier test left it stopped."""
    if not own_postgres.running():
        own_postgres.restart()
    return own_postgres


def db_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    GnarDB(app)
    return app


def service(dsn: str | None = None, **config: Any) -> Flask:
    """``create_app`` with a view that writes a row then reads the table back."""
    if dsn is not None:
        config["GNAR_PG_DSN"] = dsn
    app = create_app("snowy", no_jwt=True, config={"TESTING": True, **config})

    @app.post("/notes")
    def add_note() -> Any:
        gnar.db.run("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text)")
        gnar.db.run("INSERT INTO notes (body) VALUES (%(body)s)", {"body": request.json["body"]})
        return jsonify(notes=gnar.db.all("SELECT body FROM notes ORDER BY id"))

    @app.get("/answer")
    def answer() -> Any:
        return jsonify(answer=gnar.db.one("SELECT 42"))

    return app


def server_connections(uri: str, application_name: str) -> int:
    probe = postgres.Postgres(uri, minconn=0, maxconn=1)
    try:
        return int(probe.one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ))
    finally:
        probe.pool.clear()


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


# -- queries ---------------------------------------------------------------------------


def test_queries_run_through_gnar_db_on_a_plain_flask_app(gnar_postgres: EmbeddedPostgres) -> None:
    app = db_app(**gnar_postgres.config)
    with app.app_context():
        assert isinstance(gnar.db, postgres.Postgres)
        gnar.db.run("CREATE TABLE IF NOT EXISTS lifts (name text, seats int)")
        gnar.db.run("TRUNCATE lifts")
        gnar.db.run("INSERT INTO lifts VALUES (%s, %s), (%s, %s)", ("gondola", 8, "t-bar", 2))
        assert gnar.db.one("SELECT seats FROM lifts WHERE name = %s", ("gondola",)) == 8
        assert gnar.db.one("SELECT seats FROM lifts WHERE name = 'none'") is None
        rows = gnar.db.all("SELECT name, seats FROM lifts ORDER BY seats")
        assert [(row.name, row.seats) for row in rows] == [("t-bar", 2), ("gondola", 8)]


def test_a_view_writes_and_reads_a_table_through_create_app(gnar_postgres: EmbeddedPostgres) -> None:
    app = service(gnar_postgres.uri)
    with app.app_context():
        gnar.db.run("DROP TABLE IF EXISTS notes")
    client = app.test_client()
    assert client.post("/notes", json={"body": "fresh tracks"}).get_json() == {
        "notes": ["fresh tracks"]
    }
    assert client.post("/notes", json={"body": "moguls"}).get_json() == {
        "notes": ["fresh tracks", "moguls"]
    }


def test_an_error_in_a_transaction_rolls_it_back(gnar_postgres: EmbeddedPostgres) -> None:
    app = db_app(**gnar_postgres.config)
    db = get_state(app).db
    db.run("CREATE TABLE IF NOT EXISTS passes (holder text UNIQUE)")
    db.run("TRUNCATE passes")
    with pytest.raises(ZeroDivisionError):
        with db.get_cursor() as cursor:
            cursor.run("INSERT INTO passes VALUES ('ana')")
            raise ZeroDivisionError
    assert db.all("SELECT holder FROM passes") == []


def test_run_one_and_all_are_each_their_own_transaction(gnar_postgres: EmbeddedPostgres) -> None:
    """One statement in autocommit mode: atomic, committed on return, and the same
    pooled connection still gives get_cursor() a transaction that rolls back."""
    db = get_state(db_app(**gnar_postgres.config, GNAR_PG_MAX_CONNECTIONS=1)).db
    db.run("CREATE TABLE IF NOT EXISTS chairs (n int UNIQUE)")
    db.run("TRUNCATE chairs")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        db.run("INSERT INTO chairs VALUES (1); INSERT INTO chairs VALUES (1)")
    assert db.all("SELECT n FROM chairs") == []
    assert db.one("INSERT INTO chairs VALUES (2) RETURNING n") == 2
    other = postgres.Postgres(gnar_postgres.uri, minconn=0, maxconn=1)
    try:
        assert other.all("SELECT n FROM chairs") == [2]
    finally:
        other.pool.clear()

    with pytest.raises(ZeroDivisionError):
        with db.get_cursor() as cursor:
            cursor.run("INSERT INTO chairs VALUES (3)")
            raise ZeroDivisionError
    with db.get_cursor() as cursor:
        cursor.run("INSERT INTO chairs VALUES (4)")
    assert db.all("SELECT n FROM chairs ORDER BY n") == [2, 4]
    db.run("VACUUM chairs")  # refused inside a transaction block; a statement of its own runs it

    db.readonly = True  # postgres.py's switch: every statement in a read-only transaction
    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        db.run("INSERT INTO chairs VALUES (5)")
    assert db.one("SELECT count(*) FROM chairs") == 2


def test_configured_signal_publishes_the_database(gnar_postgres: EmbeddedPostgres) -> None:
    received: list[tuple[Flask, Any]] = []

    def on_configured(sender: Flask, **kwargs: Any) -> None:
        received.append((sender, kwargs["db"]))

    with signals.database_configured.connected_to(on_configured):
        app = db_app(**gnar_postgres.config)
    assert received == [(app, get_state(app).db)]
    assert received[0][1].one("SELECT 1") == 1


def test_two_apps_have_their_own_databases(gnar_postgres: EmbeddedPostgres) -> None:
    first, second = db_app(**gnar_postgres.config), db_app(**gnar_postgres.config)
    assert get_state(first).db is not get_state(second).db


def test_create_app_with_no_db_has_no_database() -> None:
    app = create_app("snowy", no_db=True, no_jwt=True)
    assert "database" not in get_state(app).readiness_checks
    with app.app_context(), pytest.raises(AttributeError, match="GnarDB"):
        gnar.db


# -- settings ----------------------------------------------------------------------------


def test_endpoint_settings_build_the_connection(
    gnar_postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_dir = gnar_postgres.uri.split("host=")[1]
    monkeypatch.setenv("GNAR_PG_ENDPOINT", socket_dir)
    monkeypatch.setenv("GNAR_PG_DATABASE", "postgres")
    monkeypatch.setenv("GNAR_PG_USERNAME", "postgres")
    monkeypatch.setenv("GNAR_PG_PASSWORD", SECRET)
    app = db_app()
    assert get_state(app).db.one("SELECT current_user") == "postgres"


def test_env_prefix_applies_to_database_settings(gnar_postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_APP_PG_DSN", gnar_postgres.uri)
    app = create_app("snowy", env_prefix="MY_APP", no_jwt=True)
    assert get_state(app).db.one("SELECT 7") == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc", "GNAR_PG_MAX_CONNECTIONS: expected a whole number, got 'abc'"),
     ("0", "GNAR_PG_MAX_CONNECTIONS: expected a whole number from 1 to 262143 "
           "(Postgres' most connections), got 0"),
     ("262144", "GNAR_PG_MAX_CONNECTIONS: expected a whole number from 1 to 262143 "
                "(Postgres' most connections), got 262144")],
)
def test_bad_max_connections_stops_start_up(
    gnar_postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("GNAR_PG_MAX_CONNECTIONS", value)
    with pytest.raises(ConfigError) as raised:
        db_app(**gnar_postgres.config)
    assert str(raised.value) == expected


@pytest.mark.parametrize("production", [False, True])
def test_a_pool_larger_than_the_server_accepts_stops_start_up(
    gnar_postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch, production: bool
) -> None:
    """Checked once the server answers: such a pool would answer 503 under load."""
    server_max = int(postgres.Postgres(gnar_postgres.uri).one("SHOW max_connections"))
    monkeypatch.setenv("GNAR_PG_MAX_CONNECTIONS", str(server_max + 1))
    app = Flask(__name__)
    app.config.update(GNAR_PRODUCTION=production, **gnar_postgres.config)
    with pytest.raises(ConfigError) as raised:
        GnarDB(app)
    message = str(raised.value)
    assert message.startswith(f"GNAR_PG_MAX_CONNECTIONS: is {server_max + 1}, more than the "), message
    assert "connection(s) the server accepts for this role" in message


def test_a_pool_as_large_as_the_server_accepts_starts(gnar_postgres: EmbeddedPostgres) -> None:
    db = postgres.Postgres(gnar_postgres.uri)
    reserved = 0 if db.one("SHOW is_superuser") == "on" else int(db.one("SHOW superuser_reserved_connections"))
    largest = int(db.one("SHOW max_connections")) - reserved
    app = db_app(GNAR_PG_MAX_CONNECTIONS=largest, **gnar_postgres.config)
    assert get_state(app).db.one("SELECT 1") == 1


def test_the_longest_accepted_timeouts_are_honoured(gnar_postgres: EmbeddedPostgres) -> None:
    """2147483 s is the most statement_timeout holds in milliseconds: the probes still run."""
    app = db_app(GNAR_PG_CONNECT_TIMEOUT=2147483, GNAR_PG_READINESS_TIMEOUT="2147483",
                 **gnar_postgres.config)
    assert get_state(app).readiness_checks["database"]() is True
    assert get_state(app).db.one("SELECT 1") == 1


def test_more_minimum_than_maximum_connections_stops_start_up(gnar_postgres: EmbeddedPostgres) -> None:
    with pytest.raises(ConfigError, match=r"GNAR_PG_MIN_CONNECTIONS: is 5, more than GNAR_PG_MAX_CONNECTIONS \(2\)"):
        db_app(GNAR_PG_MIN_CONNECTIONS=5, GNAR_PG_MAX_CONNECTIONS=2, **gnar_postgres.config)


def test_production_without_settings_names_the_endpoint_variable() -> None:
    with pytest.raises(ConfigError) as raised:
        create_app("snowy", production=True, no_jwt=True)
    assert raised.value.key == "GNAR_PG_ENDPOINT"
    assert "required in production" in str(raised.value)


def test_production_error_follows_the_env_prefix() -> None:
    with pytest.raises(ConfigError, match="^MY_APP_PG_ENDPOINT: "):
        create_app("snowy", production=True, env_prefix="MY_APP", no_jwt=True)


def test_endpoint_without_database_names_the_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_PG_ENDPOINT", "db.internal")
    monkeypatch.setenv("GNAR_PG_USERNAME", "snowy")
    with pytest.raises(ConfigError, match="^GNAR_PG_DATABASE: is required"):
        db_app()


def test_username_without_endpoint_is_refused_rather_than_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_PG_USERNAME", "snowy")
    with pytest.raises(ConfigError, match="^GNAR_PG_ENDPOINT: is required"):
        db_app()


def test_dsn_and_endpoint_together_are_refused(gnar_postgres: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_PG_ENDPOINT", "db.internal")
    with pytest.raises(ConfigError, match="^GNAR_PG_DSN: set either it or GNAR_PG_ENDPOINT, not both"):
        db_app(**gnar_postgres.config)


def test_a_malformed_dsn_is_named_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as raised:
        db_app(GNAR_PG_DSN=f"host=db.internal password={SECRET}")
    assert str(raised.value) == "app.config['GNAR_PG_DSN']: is malformed"


# -- the embedded development database --------------------------------------------------------


def test_development_without_endpoint_uses_the_embedded_postgres(
    gnar_postgres: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_gnar")
    app = db_app(GNAR_PG_EMBEDDED_DIR=str(gnar_postgres.data_dir), GNAR_PG_DATABASE="snowy_dev")
    db = get_state(app).db
    assert db.one("SELECT current_database()") == "snowy_dev"
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "GNAR_PG_ENDPOINT is not set: using an embedded Postgres for development" in message
        and str(gnar_postgres.data_dir) in message
        for message in messages
    ), messages


# -- readiness, the pool and stopping -----------------------------------------------------


def test_readiness_is_true_while_the_database_answers(gnar_postgres: EmbeddedPostgres) -> None:
    state = get_state(db_app(**gnar_postgres.config))
    assert state.readiness_checks["database"]() is True
    assert state.ready() == {"database": True}


def test_the_pool_never_opens_more_than_max_connections(gnar_postgres: EmbeddedPostgres) -> None:
    app = db_app(GNAR_NAME="bounded-pool", GNAR_PG_MAX_CONNECTIONS=2, **gnar_postgres.config)
    db = get_state(app).db
    with ExitStack() as held:
        cursors = [held.enter_context(db.get_cursor()) for _ in range(2)]
        assert [cursor.one("SELECT 1") for cursor in cursors] == [1, 1]
        with pytest.raises(DatabaseUnavailable) as raised:
            db.one("SELECT 1")
        assert raised.value.code == 503
        assert server_connections(gnar_postgres.uri, "bounded-pool") == 2
    assert db.one("SELECT 2") == 2


def test_stopping_the_app_closes_the_pool(gnar_postgres: EmbeddedPostgres) -> None:
    app = db_app(GNAR_NAME="closing-pool", GNAR_PG_MIN_CONNECTIONS=2, **gnar_postgres.config)
    state, db = get_state(app), get_state(app).db
    with db.get_cursor() as first, db.get_cursor() as second:
        first.one("SELECT 1"), second.one("SELECT 1")
    assert server_connections(gnar_postgres.uri, "closing-pool") == 2
    state.start()
    state.stop()
    assert wait_for(lambda: server_connections(gnar_postgres.uri, "closing-pool") == 0)
    with pytest.raises(DatabaseUnavailable, match="pool is closed"):
        db.one("SELECT 1")


# -- a database that is down or restarts --------------------------------------------------------


def unreachable_settings() -> dict[str, Any]:
    return {
        "GNAR_PG_ENDPOINT": "127.0.0.1", "GNAR_PG_PORT": free_port(),
        "GNAR_PG_DATABASE": "snowy", "GNAR_PG_USERNAME": "snowy", "GNAR_PG_PASSWORD": SECRET,
    }


def test_production_stops_when_the_database_is_down_at_start() -> None:
    settings = unreachable_settings()
    with pytest.raises(DatabaseUnavailable) as raised:
        create_app("snowy", production=True, no_jwt=True, config=settings)
    message = str(raised.value)
    assert f"cannot reach the database snowy@127.0.0.1:{settings['GNAR_PG_PORT']}/snowy" in message
    assert "Connection refused" in message


def test_development_starts_with_the_database_down_and_answers_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = service(**unreachable_settings())
    assert get_state(app).ready() == {"database": False}
    response = app.test_client().get("/answer")
    assert response.status_code == 503
    assert response.get_json() == {"error": "The database is unavailable; try again shortly."}
    assert "does not answer" in caplog.text


def test_a_plain_flask_app_answers_503_json_too() -> None:
    app = db_app(**unreachable_settings())

    @app.get("/")
    def index() -> Any:
        return {"answer": gnar.db.one("SELECT 1")}

    response = app.test_client().get("/")
    assert response.status_code == 503
    assert response.get_json() == {"error": "The database is unavailable; try again shortly."}


def test_the_password_never_reaches_logs_or_errors(
    gnar_postgres: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    down = service(**unreachable_settings())
    seen.append(down.test_client().get("/answer").get_data(as_text=True))
    down_state = get_state(down)
    seen.append(repr(down_state.ready()) + repr(down_state.db))
    for production_settings in (unreachable_settings(), {"GNAR_PG_DSN": f"password={SECRET} oops"}):
        with pytest.raises(Exception) as raised:
            create_app("snowy", production=True, no_jwt=True, config=production_settings)
        seen.append(f"{raised.value!s} {raised.value!r} {raised.value.__cause__!r}")
    up = db_app(GNAR_PG_DSN=make_dsn(gnar_postgres.uri, password=SECRET))
    seen.append(repr(get_state(up).db.one("SELECT 'up'")) + repr(get_state(up).db))
    assert "up" in seen[-1] and "Connection refused" in caplog.text
    assert SECRET not in caplog.text
    assert not [text for text in seen if SECRET in text]


def test_readiness_follows_the_database_down_and_back(running_own_postgres: OwnPostgres) -> None:
    app = service(running_own_postgres.uri)
    state, client = get_state(app), app.test_client()
    assert client.get("/answer").status_code == 200
    assert state.ready() == {"database": True}

    running_own_postgres.stop()
    assert state.ready() == {"database": False}
    response = client.get("/answer")
    assert (response.status_code, response.get_json()) == (
        503, {"error": "The database is unavailable; try again shortly."}
    )

    running_own_postgres.restart()
    assert state.ready() == {"database": True}
    assert [client.get("/answer").status_code for _ in range(5)] == [200] * 5


def test_requests_succeed_right_after_a_restart_with_a_full_pool(
    running_own_postgres: OwnPostgres,
) -> None:
    app = service(running_own_postgres.uri, GNAR_PG_MIN_CONNECTIONS=0)
    db = get_state(app).db
    with ExitStack() as held:
        for _ in range(4):
            held.enter_context(db.get_cursor()).one("SELECT 1")
    assert len(db.pool.idle_connections) == 4

    running_own_postgres.restart()
    client = app.test_client()
    statuses = [client.get("/answer").status_code for _ in range(6)]
    statuses += [client.post("/notes", json={"body": "after restart"}).status_code]
    assert statuses == [200] * 7


def test_a_silently_dead_connection_is_retried_once(
    running_own_postgres: OwnPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_gnar")
    proxy = CuttingProxy(running_own_postgres.socket_path)
    try:
        dsn = f"host=127.0.0.1 port={proxy.port} dbname=postgres user=postgres"
        db = get_state(db_app(GNAR_PG_DSN=dsn)).db
        db.run("CREATE TABLE IF NOT EXISTS tickets (id int)")
        db.run("TRUNCATE tickets")

        proxy.cut()
        db.run("INSERT INTO tickets VALUES (1)")
        assert "pooled database connection was dead" in caplog.text
        assert db.all("SELECT id FROM tickets") == [1]

        proxy.cut()
        with pytest.raises(DatabaseUnavailable):
            with db.get_cursor() as cursor:
                cursor.one("SELECT 1")
        assert db.one("SELECT 3") == 3

        proxy.cut()
        with pytest.raises(DatabaseUnavailable):
            with db.get_connection() as connection:
                connection.cursor().one("SELECT 1")
        with db.get_connection() as connection:
            assert connection.cursor().one("SELECT 4") == 4
    finally:
        proxy.close()


def test_bjoern_serves_through_a_restart_and_closes_the_pool_on_sigterm(
    running_own_postgres: OwnPostgres,
) -> None:
    port = free_port()
    dsn = make_dsn(running_own_postgres.uri, application_name="bjoern-e2e")
    process = start_process(textwrap.dedent(f"""
        from flask_gnar import create_app, gnar, serve
        app = create_app("snowy", production=True, port={port}, no_jwt=True)
        @app.get("/answer")
        def answer():
            return {{"answer": gnar.db.one("SELECT 42")}}
        serve(app, host="127.0.0.1")
    """), GNAR_PG_DSN=dsn)
    url = f"http://127.0.0.1:{port}/answer"
    try:
        assert wait_for_http(url, process=process).json() == {"answer": 42}
        assert server_connections(running_own_postgres.uri, "bjoern-e2e") == 1
        running_own_postgres.restart()
        assert [requests.get(url, timeout=10).status_code for _ in range(3)] == [200] * 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        output = stop(process)
    assert "closed the connection pool of the database postgres@" in output, output
    assert "discarding a pooled database connection the server has closed" in output, output
