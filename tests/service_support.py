"""A throw-away service package written to disk, and fresh databases on the shared Postgres."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import psycopg2
from psycopg2.sql import SQL, Identifier

from flask_gnar.testing import EmbeddedPostgres

MAIN = '''
"""{name}: the seed's layout, app/main.py builds the app."""
import os

from flask import Blueprint, jsonify

from flask_gnar import create_app, gnar, serve

app = create_app(
    "{name}",
    production=os.environ.get("{upper}_PRODUCTION") == "1",
    port=int(os.environ.get("{upper}_HTTP_PORT", "9400")),
    no_jwt=True,
)


@app.get("/slopes")
def slopes():
    return jsonify(slopes=gnar.db.all("SELECT name FROM slopes ORDER BY id"))


if __name__ == "__main__":
    serve(app, host="127.0.0.1")
'''


def write_service(root: Path, name: str, migrations: dict[str, str], main: bool = True) -> Path:
    """``root/name`` with ``app/main.py`` and ``migrations/``; returns the migrations folder.

    ``main=False`` leaves out ``app/main.py`` for tests that build the app themselves
    (the blueprint scan would import it, and it builds a development app of its own).
    """
    package = root / name
    (package / "app").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "app" / "__init__.py").write_text("")
    if main:
        (package / "app" / "main.py").write_text(MAIN.format(name=name, upper=name.upper()))
    folder = package / "migrations"
    folder.mkdir()
    for file_name, sql in migrations.items():
        (folder / file_name).write_text(textwrap.dedent(sql))
    return folder


def fresh_database(postgres: EmbeddedPostgres) -> str:
    """A new, empty database on the shared server; its URI."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(postgres.uri)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
    finally:
        conn.close()
    return postgres.uri_for(name)


def query(uri: str, sql: str) -> list[tuple[object, ...]]:
    """Rows of ``sql`` on a connection of its own."""
    conn = psycopg2.connect(uri)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        conn.close()


def tables(uri: str) -> set[str]:
    return {str(row[0]) for row in query(uri, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
