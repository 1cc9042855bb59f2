"""Schema migrations: the SQL files of ``<package>/migrations/``, each applied once.

Every pending file is applied in one transaction, under a transaction-level
advisory lock: replicas that start together queue on the lock, and the ones
that get it after the first find nothing left to do. A failing file rolls back
the whole run (Postgres' DDL is transactional) and raises
:class:`~flask_gnar.exceptions.MigrationError` naming it. Applied files are
recorded in the table ``gnar_migrations`` with the app's name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import psycopg2
from flask import Flask

from .cli import gnar_cli, loaded_app
from .exceptions import DatabaseUnavailable, MigrationError
from .state import GnarState, get_state

log = logging.getLogger(__name__)

TABLE = "gnar_migrations"
#: The advisory lock every flask-gnar migration run takes (``b"gnarmigr"`` as a bigint).
LOCK_KEY = int.from_bytes(b"gnarmigr", "big", signed=True)

CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    service text NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, name)
)
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file; ``name`` is its file name, what the database records."""

    name: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    """A migration file or a recorded one: applied (when) or pending, changed or missing."""

    name: str
    applied_at: datetime | None
    changed: bool = False
    missing: bool = False


def migrations_directory(state: GnarState, explicit: str | None = None) -> Path | None:
    """``GNAR_PG_MIGRATIONS_DIR``, else ``migrations/`` inside the app's package.

    ``None`` when the app's name is no importable package or module.
    """
    configured: str | None = state.settings.get("PG_MIGRATIONS_DIR", explicit=explicit)
    if configured:
        return Path(configured).expanduser()
    try:
        spec = importlib.util.find_spec(state.name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "migrations"
    return Path(spec.origin).parent / "migrations" if spec.origin else None


def find_migrations(directory: Path | None) -> list[Migration]:
    """The ``*.sql`` files of ``directory`` in the order of their names."""
    if directory is None or not directory.is_dir():
        return []
    files = sorted(path for path in directory.iterdir() if path.suffix == ".sql" and path.is_file())
    return [Migration(path.name, path) for path in files]


def apply_migrations(db: Any, service: str, directory: Path | None) -> list[str]:
    """Apply the pending migrations of ``directory``; the names applied, in order.

    ``db`` is the app's :class:`postgres.Postgres`. Waits for a run in another
    process to finish first.
    """
    migrations = find_migrations(directory)
    if not migrations:
        return []
    with db.get_cursor() as cursor:
        cursor.run("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        cursor.run(CREATE_TABLE)
        applied = recorded(cursor, service)
        pending = [m for m in migrations if m.name not in applied]
        warn_about_changes(migrations, applied)
        for migration in pending:
            run_one(cursor, service, migration)
    for migration in pending:
        log.info("applied the migration %s", migration.name)
    if not pending:
        log.info("the database schema is up to date (%d migrations)", len(migrations))
    return [migration.name for migration in pending]


def run_one(cursor: Any, service: str, migration: Migration) -> None:
    sql = migration.sql()
    try:
        if sql.strip():
            cursor.run(sql)
    except psycopg2.Error as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise MigrationError(migration.name, str(migration.path), reason) from error
    cursor.run(
        f"INSERT INTO {TABLE} (service, name, checksum) VALUES (%s, %s, %s)",
        (service, migration.name, migration.checksum()),
    )


def recorded(cursor: Any, service: str) -> dict[str, tuple[str, datetime]]:
    """``{name: (checksum, applied_at)}`` of what the database records for ``service``."""
    rows = cursor.all(
        f"SELECT name, checksum, applied_at FROM {TABLE} WHERE service = %s", (service,)
    )
    return {row.name: (row.checksum, row.applied_at) for row in rows}


def warn_about_changes(migrations: list[Migration], applied: dict[str, tuple[str, datetime]]) -> None:
    for migration in migrations:
        if migration.name in applied and applied[migration.name][0] != migration.checksum():
            log.warning(
                "the migration %s changed after it was applied; it is not applied again: "
                "put schema changes in a new file", migration.name,
            )


def migration_status(db: Any, service: str, directory: Path | None) -> list[MigrationStatus]:
    """Every migration file and every recorded migration, in name order."""
    migrations = {m.name: m for m in find_migrations(directory)}
    with db.get_cursor(readonly=True) as cursor:
        exists = cursor.one("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
        applied = recorded(cursor, service) if exists else {}
    statuses = []
    for name in sorted(set(migrations) | set(applied)):
        migration = migrations.get(name)
        if name not in applied:
            statuses.append(MigrationStatus(name, None))
            continue
        checksum, applied_at = applied[name]
        statuses.append(MigrationStatus(
            name, applied_at,
            changed=migration is not None and migration.checksum() != checksum,
            missing=migration is None,
        ))
    return statuses


def init_migrations(
    app: Flask, state: GnarState, db: Any, directory: Path | None, at_start_up: bool
) -> None:
    """Add ``flask gnar migrate`` to the app; apply the pending migrations now if asked."""
    state.provide(migrations_directory=directory)
    gnar_cli(app).add_command(migrate_command)
    if at_start_up:
        apply_migrations(db, state.name, directory)


@click.command("migrate")
@click.option("--list", "list_only", is_flag=True, help="Show what is applied and pending; apply nothing.")
def migrate_command(list_only: bool) -> None:
    """Apply the pending SQL files of <package>/migrations/, in the order of their names."""
    app = loaded_app()
    state = get_state(app)
    directory: Path | None = state.migrations_directory
    try:
        if list_only:
            print_status(migration_status(state.db, state.name, directory), directory)
            return
        applied = apply_migrations(state.db, state.name, directory)
    except MigrationError as error:
        raise click.ClickException(str(error)) from None
    except DatabaseUnavailable:
        raise click.ClickException(f"the database {state.db.target} does not answer") from None
    for name in applied:
        click.echo(f"applied {name}")
    click.echo(f"{len(applied)} migration(s) applied; the schema of {state.name} is up to date")


def print_status(statuses: list[MigrationStatus], directory: Path | None) -> None:
    click.echo(f"migrations in {directory or '(no folder: the app is no importable package)'}:")
    for status in statuses:
        if status.applied_at is None:
            click.echo(f"  pending  {status.name}")
            continue
        notes = " (file missing)" if status.missing else " (file changed since)" if status.changed else ""
        click.echo(f"  applied  {status.name}  {status.applied_at:%Y-%m-%d %H:%M:%S %Z}{notes}")
    if not statuses:
        click.echo("  (none)")
