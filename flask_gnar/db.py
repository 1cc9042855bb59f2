"""GnarDB: a postgres.py database per app, over a bounded pool that survives restarts."""

from __future__ import annotations

import logging
import select
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
from flask import Flask
from postgres import Postgres
from postgres.context_managers import ConnectionContextManager, CursorContextManager
from psycopg2.extensions import make_dsn, parse_dsn
from psycopg2.sql import SQL, Identifier
from psycopg2_pool import ConnectionPool, PoolError, ThreadSafeConnectionPool

from . import signals
from .config import MAX_C_INT, Settings, int_between, parse_bool, parse_port, parse_seconds
from .embedded import start_embedded_postgres
from .exceptions import ConfigError, DatabaseUnavailable
from .extension import GnarExtension
from .migrations import init_migrations, migrations_directory
from .state import GnarState

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What psycopg2 raises when there is no usable connection (as opposed to bad SQL).
CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)

#: The settings that name a server; without any of them development uses an embedded Postgres.
SERVER_SETTINGS = ("PG_ENDPOINT", "PG_PORT", "PG_USERNAME", "PG_PASSWORD")

DEFAULT_MIN_CONNECTIONS = 1
DEFAULT_MAX_CONNECTIONS = 10
DEFAULT_IDLE_TIMEOUT = 600.0
DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_READINESS_TIMEOUT = 2

#: Postgres' most connections (MAX_BACKENDS): no server accepts a larger max_connections.
MAX_BACKENDS = 2**18 - 1
#: The probes bound their query with statement_timeout, a C int of milliseconds (~24.8
#: days); libpq's connect_timeout (a C int of seconds) is larger.
MAX_TIMEOUT_SECONDS = MAX_C_INT // 1000

parse_pool_minimum = int_between(0, MAX_BACKENDS, limit="Postgres' most connections")
parse_pool_maximum = int_between(1, MAX_BACKENDS, limit="Postgres' most connections")
parse_timeout_int = int_between(
    1, MAX_TIMEOUT_SECONDS, limit="Postgres' statement_timeout: 2**31 - 1 milliseconds"
)


class StaleConnection(DatabaseUnavailable):
    """A connection that sat idle in the pool broke before its transaction committed."""


def unavailable(error: Exception) -> DatabaseUnavailable:
    """The 503 to raise for a libpq failure; the reason goes to the log, not the client."""
    log.warning("database unavailable: %s", reason(error))
    return DatabaseUnavailable()


def reason(error: Exception) -> str:
    """libpq's message on one line (libpq never puts the password in it)."""
    return " ".join(str(error).split()) or type(error).__name__


def input_check(conn: Any) -> Callable[[], bool]:
    """A check that the connection's socket has input waiting, built once per connection."""
    fd = conn.fileno()
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return lambda: bool(poller.poll(0))
    return lambda: bool(select.select([fd], [], [], 0)[0])  # pragma: no cover - Windows


def server_dropped(conn: Any) -> bool:
    """True when an idle connection has input waiting: the server closed it.

    An idle connection has nothing to read until it sends a query, so anything
    readable is the server's goodbye (a shutdown notice, then end of file).
    """
    return bool(conn.closed) or conn.gnar_has_input()


class CheckedPool(ThreadSafeConnectionPool):  # type: ignore[misc]
    """psycopg2_pool's pool, made safe to use across database restarts.

    - No connection is opened when the pool is built (a forking server must not
      share sockets); ``minconn`` connections are kept once they exist.
    - An idle connection the server has closed is discarded at checkout instead
      of being handed out.
    - Failing to connect, or an exhausted pool, raises :class:`DatabaseUnavailable`.
    """

    def __init__(self, *, minconn: int, **kwargs: Any) -> None:
        super().__init__(minconn=0, **kwargs)
        self.minconn = minconn
        self.closed = False

    def _connect(self, for_immediate_use: bool = False) -> Any:
        conn = super()._connect(for_immediate_use)
        conn.gnar_was_idle = not for_immediate_use
        conn.gnar_has_input = input_check(conn)
        return conn

    def getconn(self) -> Any:
        with self.lock:
            if self.closed:
                raise DatabaseUnavailable("The database connection pool is closed.")
            while True:
                conn = self.checkout()
                if not (conn.gnar_was_idle and server_dropped(conn)):
                    return conn
                log.info("discarding a pooled database connection the server has closed")
                self.connections_in_use.discard(conn)
                conn.close()

    def checkout(self) -> Any:
        # the unlocked base method: the caller holds the lock already
        try:
            conn = ConnectionPool.getconn(self)
        except PoolError:
            log.warning("all %s database connections are in use", self.maxconn)
            raise DatabaseUnavailable() from None
        except CONNECTION_ERRORS as error:
            raise unavailable(error) from error
        return conn

    def putconn(self, conn: Any) -> None:
        with self.lock:
            if self.closed:
                self.connections_in_use.discard(conn)
                conn.close()
                return
            conn.gnar_was_idle = True
            try:
                ConnectionPool.putconn(self, conn)
            except CONNECTION_ERRORS as error:
                # topping the pool back up to minconn failed: the next checkout retries
                log.info("could not reopen a pooled database connection: %s", reason(error))

    def release_idle(self) -> None:
        """Close the idle connections; the pool stays usable (before a fork)."""
        with self.lock:
            self.clear()

    def close(self) -> None:
        """Close the idle connections now and the busy ones when they come back."""
        with self.lock:
            self.closed = True
            self.clear()


def connection_lost(conn: Any, error: Exception) -> DatabaseUnavailable:
    """The 503 for a statement whose connection broke: stale when it had sat idle in the pool."""
    if conn.gnar_was_idle:
        log.info("a pooled database connection was dead: %s", reason(error))
        return StaleConnection()
    return unavailable(error)


class GuardedCursor(CursorContextManager):  # type: ignore[misc]
    """postgres.py's cursor context manager, with lost connections turned into 503s.

    The connection always goes back to the pool, even when the commit fails.
    """

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        conn = self.conn
        try:
            if not conn.closed:
                self.cursor.close()
            conn.__exit__(exc_type, exc, tb)
        except CONNECTION_ERRORS as error:
            if not conn.closed:
                raise
            raise unavailable(error) from error
        finally:
            self.pool.putconn(conn)
        if isinstance(exc, CONNECTION_ERRORS) and conn.closed:
            raise connection_lost(conn, exc) from exc


class GuardedConnection(ConnectionContextManager):  # type: ignore[misc]
    """postgres.py's connection context manager, with lost connections turned into 503s."""

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        conn = self.conn
        super().__exit__(exc_type, exc, tb)
        if isinstance(exc, CONNECTION_ERRORS) and conn.closed:
            raise unavailable(exc) from exc


class GnarPostgres(Postgres):  # type: ignore[misc]
    """A :class:`postgres.Postgres` for a web app.

    Losing the server raises :class:`~flask_gnar.exceptions.DatabaseUnavailable`
    (HTTP 503). :meth:`run`, :meth:`one` and :meth:`all` send their statement in
    autocommit mode: it is its own transaction, in one round trip instead of
    postgres.py's three (``BEGIN``, the statement, ``COMMIT``). They retry once,
    on a new connection, when a connection that had sat idle in the pool, and
    showed no sign of being closed, fails under the statement.
    """

    def __init__(
        self, dsn: str, *, minconn: int, maxconn: int, idle_timeout: float, target: str
    ) -> None:
        super().__init__(
            dsn, minconn=minconn, maxconn=maxconn, idle_timeout=idle_timeout,
            pool_class=CheckedPool,
        )
        self._dsn = dsn
        #: Where the database is, for log lines (``user@host:port/dbname``, no password).
        self.target = target

    def __repr__(self) -> str:
        return f"<GnarPostgres {self.target}>"

    def run(self, sql: Any, parameters: Any = None, **kw: Any) -> None:
        self._once_more_if_stale(lambda cursor: cursor.run(sql, parameters, **kw))

    def one(self, sql: Any, parameters: Any = None, **kw: Any) -> Any:
        return self._once_more_if_stale(lambda cursor: cursor.one(sql, parameters, **kw))

    def all(self, sql: Any, parameters: Any = None, **kw: Any) -> Any:
        return self._once_more_if_stale(lambda cursor: cursor.all(sql, parameters, **kw))

    def _statement(self, work: Callable[[Any], T]) -> T:
        """``work`` on a pooled connection in autocommit mode; the connection always goes back."""
        pool = self.pool
        conn = pool.getconn()
        try:
            conn.autocommit = True
            cursor = conn.cursor()
            try:
                return work(cursor)
            finally:
                if not conn.closed:
                    cursor.close()
        except CONNECTION_ERRORS as error:
            if conn.closed:
                raise connection_lost(conn, error) from error
            raise
        finally:
            pool.putconn(conn)

    def get_cursor(self, cursor: Any = None, **kw: Any) -> Any:
        if cursor:
            return super().get_cursor(cursor, **kw)
        kw.setdefault("readonly", self.readonly)
        return GuardedCursor(self.pool, **kw)

    def get_connection(self, **kw: Any) -> Any:
        kw.setdefault("readonly", self.readonly)
        return GuardedConnection(self.pool, **kw)

    def _in_transaction(self, work: Callable[[Any], T]) -> T:
        with self.get_cursor() as cursor:
            return work(cursor)

    def _once_more_if_stale(self, work: Callable[[Any], T]) -> T:
        # a read-only database keeps postgres.py's read-only transactions
        attempt = self._in_transaction if self.readonly else self._statement
        try:
            return attempt(work)
        except StaleConnection:
            log.info("retrying on a new database connection")
        return attempt(work)

    def ping(self, timeout: int = DEFAULT_READINESS_TIMEOUT) -> bool:
        """Can a new connection run ``SELECT 1`` within ``timeout`` seconds now?"""
        try:
            probe(self._dsn, timeout)
        except psycopg2.Error as error:
            log.warning("database %s is not ready: %s", self.target, reason(error))
            return False
        return True

    def close(self) -> None:
        """Close the pool; later queries raise :class:`DatabaseUnavailable`."""
        self.pool.close()
        log.info("closed the connection pool of the database %s", self.target)


#: How many connections the server lets this role open: max_connections, less the ones
#: kept for superusers (and, since Postgres 16, for pg_use_reserved_connections).
CONNECTIONS_FOR_THIS_ROLE = SQL("""
    SELECT current_setting('max_connections')::int - CASE
        WHEN current_setting('is_superuser') = 'on' THEN 0
        ELSE current_setting('superuser_reserved_connections')::int
            + coalesce(current_setting('reserved_connections', true)::int, 0)
    END
""")


def probe(dsn: str, timeout: int) -> int:
    """Query the server on a connection of its own; raises psycopg2's error.

    Returns how many connections the server accepts for this role.
    """
    conn = psycopg2.connect(make_dsn(dsn, connect_timeout=timeout))
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SET statement_timeout = %s", (timeout * 1000,))
            cursor.execute(CONNECTIONS_FOR_THIS_ROLE)
            row = cursor.fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def parse_dsn_setting(value: Any) -> str:
    """A libpq connection string or URI (checked now, so its errors never echo it later)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a connection string")
    try:
        parse_dsn(value)
    except psycopg2.ProgrammingError:
        raise ValueError("is not a valid connection string") from None
    return value


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` from a DSN, without the password."""
    params = parse_dsn(dsn)
    where = params.get("host", "localhost") + (f":{params['port']}" if "port" in params else "")
    user = f"{params['user']}@" if "user" in params else ""
    return f"{user}{where}/{params.get('dbname', '')}"


class GnarDB(GnarExtension):
    """A :class:`GnarPostgres` (a ``postgres.Postgres``) per app, at ``gnar.db``.

    The server comes from ``GNAR_PG_DSN`` or from ``GNAR_PG_ENDPOINT``,
    ``GNAR_PG_DATABASE``, ``GNAR_PG_USERNAME`` and ``GNAR_PG_PASSWORD``. In
    development with neither, an embedded Postgres is started (``pgserver``);
    production without them stops with a :class:`~flask_gnar.ConfigError`.
    ``init_app`` checks that the server answers: in production a database that
    is down stops start-up; in development it is logged and the app starts.
    With ``GNAR_PG_MIGRATE`` (default: on in development) it then applies the
    pending SQL files of ``<package>/migrations/`` (:mod:`flask_gnar.migrations`),
    and it adds ``flask gnar migrate`` to the app's CLI either way.
    """

    extension_name = "GnarDB"
    configured_signal = signals.database_configured
    options_accepted = frozenset({
        "dsn", "endpoint", "port", "database", "username", "password",
        "min_connections", "max_connections", "idle_timeout", "connect_timeout",
        "readiness_timeout", "embedded_dir", "migrate", "migrations_dir",
    })

    def configure(self, app: Flask, state: GnarState, settings: Settings) -> dict[str, Any]:
        minconn, maxconn = self.pool_bounds(settings)
        idle_timeout = settings.get(
            "PG_IDLE_TIMEOUT", parse_seconds,
            explicit=self.option("idle_timeout"), default=DEFAULT_IDLE_TIMEOUT,
        )
        connect_timeout = settings.get(
            "PG_CONNECT_TIMEOUT", parse_timeout_int,
            explicit=self.option("connect_timeout"), default=DEFAULT_CONNECT_TIMEOUT,
        )
        readiness_timeout = settings.get(
            "PG_READINESS_TIMEOUT", parse_timeout_int,
            explicit=self.option("readiness_timeout"), default=DEFAULT_READINESS_TIMEOUT,
        )
        migrate = settings.get(
            "PG_MIGRATE", parse_bool, explicit=self.option("migrate"), default=not state.production
        )
        directory = migrations_directory(state, self.option("migrations_dir"))
        dsn = self.configured_dsn(settings) or self.embedded_dsn(state, settings)
        dsn = with_defaults(dsn, connect_timeout=str(connect_timeout), application_name=state.name)
        db = GnarPostgres(
            dsn, minconn=minconn, maxconn=maxconn, idle_timeout=idle_timeout, target=describe(dsn)
        )
        accepted = check_reachable(db, dsn, connect_timeout, state.production)
        if accepted is not None:
            self.check_pool_fits(settings, maxconn, accepted)
        state.provide(db=db)
        init_migrations(app, state, db, directory, at_start_up=migrate and accepted is not None)
        state.readiness_checks["database"] = partial(db.ping, readiness_timeout)
        state.on_stop(db.close)
        state.before_fork(db.pool.release_idle)
        return {"db": db}

    def pool_bounds(self, settings: Settings) -> tuple[int, int]:
        minconn = settings.get(
            "PG_MIN_CONNECTIONS", parse_pool_minimum,
            explicit=self.option("min_connections"), default=DEFAULT_MIN_CONNECTIONS,
        )
        maxconn = settings.get(
            "PG_MAX_CONNECTIONS", parse_pool_maximum,
            explicit=self.option("max_connections"), default=DEFAULT_MAX_CONNECTIONS,
        )
        if minconn > maxconn:
            raise ConfigError(
                settings.env_name("PG_MIN_CONNECTIONS"),
                f"is {minconn}, more than {settings.env_name('PG_MAX_CONNECTIONS')} ({maxconn})",
            )
        return minconn, maxconn

    def check_pool_fits(self, settings: Settings, maxconn: int, accepted: int) -> None:
        """A pool the server cannot fill would answer 503 where it looks configured."""
        if maxconn <= accepted:
            return
        explicit = self.option("max_connections")
        given = "" if settings.find("PG_MAX_CONNECTIONS", explicit) else ", the default"
        raise ConfigError(
            settings.source("PG_MAX_CONNECTIONS", explicit),
            f"is {maxconn}{given}, more than the {accepted} connection(s) the server "
            "accepts for this role (its max_connections, less the reserved ones)",
        )

    def configured_dsn(self, settings: Settings) -> str | None:
        """The server the settings name, or ``None`` when they name none."""
        dsn = settings.get(
            "PG_DSN", parse_dsn_setting, explicit=self.option("dsn"), secret=True
        )
        parts = [name for name in (*SERVER_SETTINGS, "PG_DATABASE")
                 if settings.find(name, self.option(option_name(name))) is not None]
        if dsn is not None:
            if parts:
                raise ConfigError(
                    settings.env_name("PG_DSN"),
                    f"set either it or {', '.join(settings.env_name(p) for p in parts)}, not both",
                )
            return dsn
        if not any(name in parts for name in SERVER_SETTINGS):
            return None
        return make_dsn(
            host=settings.get("PG_ENDPOINT", explicit=self.option("endpoint"), required=True),
            port=settings.get("PG_PORT", parse_port, explicit=self.option("port")),
            dbname=settings.get("PG_DATABASE", explicit=self.option("database"), required=True),
            user=settings.get("PG_USERNAME", explicit=self.option("username"), required=True),
            password=settings.get("PG_PASSWORD", explicit=self.option("password"), secret=True),
        )

    def embedded_dsn(self, state: GnarState, settings: Settings) -> str:
        """Start (or reuse) the development database; refused in production."""
        endpoint = settings.env_name("PG_ENDPOINT")
        if state.production:
            raise ConfigError(
                endpoint,
                f"is required in production: set it with {settings.env_name('PG_DATABASE')}, "
                f"{settings.env_name('PG_USERNAME')} and {settings.env_name('PG_PASSWORD')}, "
                f"or set {settings.env_name('PG_DSN')}",
            )
        data_dir = Path(
            settings.get("PG_EMBEDDED_DIR", explicit=self.option("embedded_dir"))
            or default_embedded_dir(state.name)
        ).expanduser()
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = start_embedded_postgres(data_dir)
        except ImportError:  # pragma: no cover - depends on the extras installed
            raise ConfigError(
                endpoint,
                "is not set and the embedded development database needs pgserver: "
                "pip install 'flask-gnar[embedded]', or point the app at a server",
            ) from None
        database: str | None = settings.get("PG_DATABASE", explicit=self.option("database"))
        if database:
            create_database_if_missing(server.uri, database)
        log.warning(
            "%s is not set: using an embedded Postgres for development (data in %s); "
            "production needs a real server", endpoint, data_dir,
        )
        return server.uri_for(database)


def option_name(setting: str) -> str:
    """The constructor option for a setting: ``PG_ENDPOINT`` -> ``endpoint``."""
    return setting.removeprefix("PG_").lower()


def with_defaults(dsn: str, **defaults: str) -> str:
    """``dsn`` with each of ``defaults`` added unless the DSN sets it already."""
    present = parse_dsn(dsn)
    missing = {key: value for key, value in defaults.items() if key not in present}
    return make_dsn(dsn, **missing) if missing else dsn


def check_reachable(db: GnarPostgres, dsn: str, timeout: int, production: bool) -> int | None:
    """Production stops on a database that does not answer; development carries on.

    Returns how many connections the server accepts for this role, ``None`` when it
    did not answer.
    """
    try:
        accepted = probe(dsn, timeout)
    except psycopg2.Error as error:
        if production:
            raise DatabaseUnavailable(
                f"GnarDB cannot reach the database {db.target}: {reason(error)}"
            ) from None
        log.warning(
            "the database %s does not answer (%s); requests that need it answer 503 "
            "until it does", db.target, reason(error),
        )
        return None
    log.info("Database %s answers", db.target)
    return accepted


def default_embedded_dir(app_name: str) -> Path:
    import platformdirs

    return Path(platformdirs.user_data_path("flask-gnar")) / app_name / "pgdata"


def create_database_if_missing(uri: str, database: str) -> None:
    conn = psycopg2.connect(uri)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(SQL("CREATE DATABASE {}").format(Identifier(database)))
    finally:
        conn.close()
