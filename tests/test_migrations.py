"""Migrations against the embedded Postgres: order, once each, start-up, failures, replicas racing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_gnar import ConfigError, GnarDB, MigrationError, create_app
from flask_gnar.migrations import apply_migrations
from flask_gnar.testing import EmbeddedPostgres
from helpers import start_process
from service_support import fresh_database, query, tables, write_service

SLOPES = {
    "0001_slopes.sql": """
        CREATE TABLE slopes (id serial PRIMARY KEY, name text NOT NULL);
    """,
    # after 0001 by name although written first; it needs 0001's table
    "0002_seed.sql": """
        INSERT INTO slopes (name) VALUES ('Corbet''s Couloir'), ('100% Powder');
    """,
    "0010_lifts.sql": """
        CREATE TABLE lifts (id serial PRIMARY KEY, slope_id int REFERENCES slopes);
    """,
}


@pytest.fixture
def database(gnar_postgres: EmbeddedPostgres) -> str:
    return fresh_database(gnar_postgres)


def db_app(uri: str, folder: Path, **options: Any) -> Flask:
    app = Flask("glacier")
    app.config["GNAR_PG_DSN"] = uri
    GnarDB(app, migrations_dir=str(folder), **options)
    return app


def recorded(uri: str) -> list[str]:
    return [str(row[0]) for row in query(uri, "SELECT name FROM gnar_migrations ORDER BY applied_at, name")]


def test_applies_the_files_in_name_order_once_each(tmp_path: Path, database: str) -> None:
    folder = write_service(tmp_path, "glacier", {})
    for name in ("0010_lifts.sql", "0002_seed.sql", "0001_slopes.sql"):
        (folder / name).write_text(SLOPES[name])
    (folder / "README.txt").write_text("not a migration")

    app = db_app(database, folder)

    assert {"slopes", "lifts", "gnar_migrations"} <= tables(database)
    assert query(database, "SELECT name FROM slopes ORDER BY id") == [("Corbet's Couloir",), ("100% Powder",)]
    assert recorded(database) == ["0001_slopes.sql", "0002_seed.sql", "0010_lifts.sql"]
    db = app.extensions["gnar"].db
    assert apply_migrations(db, "glacier", folder) == []
    db_app(database, folder)  # a restart applies nothing again
    assert query(database, "SELECT count(*) FROM slopes") == [(2,)]


def test_a_new_file_is_applied_by_the_next_start(tmp_path: Path, database: str) -> None:
    folder = write_service(tmp_path, "glacier", {"0001_slopes.sql": SLOPES["0001_slopes.sql"]})
    db_app(database, folder)
    (folder / "0002_seed.sql").write_text(SLOPES["0002_seed.sql"])

    db_app(database, folder)

    assert recorded(database) == ["0001_slopes.sql", "0002_seed.sql"]
    assert query(database, "SELECT count(*) FROM slopes") == [(2,)]


def test_a_failing_migration_rolls_back_the_whole_run_and_names_the_file(tmp_path: Path, database: str) -> None:
    folder = write_service(tmp_path, "glacier", {"0001_slopes.sql": SLOPES["0001_slopes.sql"]})
    db_app(database, folder)
    (folder / "0002_seed.sql").write_text(SLOPES["0002_seed.sql"])
    (folder / "0003_lifts.sql").write_text(SLOPES["0010_lifts.sql"])
    (folder / "0004_broken.sql").write_text("CREATE TABLE gondolas (id serial PRIMARY KEY);\nCREATE TABLE oops (;\n")

    with pytest.raises(MigrationError) as raised:
        db_app(database, folder)

    assert raised.value.migration == "0004_broken.sql"
    assert "0004_broken.sql" in str(raised.value) and "syntax error" in str(raised.value)
    assert isinstance(raised.value, ValueError)
    # as it was: 0002 and 0003 were rolled back with 0004, 0001 stays
    assert tables(database) == {"slopes", "gnar_migrations"}
    assert query(database, "SELECT count(*) FROM slopes") == [(0,)]
    assert recorded(database) == ["0001_slopes.sql"]


def test_a_failing_migration_stops_create_app(tmp_path: Path, database: str) -> None:
    folder = write_service(tmp_path, "glacier", {"0001_bad.sql": "INSERT INTO nowhere VALUES (1);"})

    with pytest.raises(MigrationError, match="0001_bad.sql"):
        create_app("glacier", no_jwt=True, config={"GNAR_PG_DSN": database, "GNAR_PG_MIGRATIONS_DIR": str(folder)})

    assert tables(database) == set()


def test_development_applies_at_start_up_by_default_production_does_not(
    tmp_path: Path, database: str, gnar_postgres: EmbeddedPostgres
) -> None:
    write_service(tmp_path, "glacier", SLOPES, main=False)
    sys.path.insert(0, str(tmp_path))
    try:
        create_app("glacier", production=True, no_jwt=True, config={"GNAR_PG_DSN": database})
        assert tables(database) == set()
        create_app("glacier", no_jwt=True, config={"GNAR_PG_DSN": database, "GNAR_PG_MIGRATE": "0"})
        assert tables(database) == set()
        # the folder found from the package name: glacier/migrations/
        create_app("glacier", no_jwt=True, config={"GNAR_PG_DSN": database})
        assert recorded(database) == list(SLOPES)
        other = fresh_database(gnar_postgres)
        create_app("glacier", production=True, no_jwt=True, config={"GNAR_PG_DSN": other, "GNAR_PG_MIGRATE": True})
        assert recorded(other) == list(SLOPES)
    finally:
        sys.path.remove(str(tmp_path))


def test_a_malformed_switch_names_the_variable(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_service(tmp_path, "glacier", SLOPES)
    monkeypatch.setenv("GNAR_PG_MIGRATE", "sometimes")

    with pytest.raises(ConfigError, match="GNAR_PG_MIGRATE"):
        db_app(database, folder)


def test_services_sharing_a_database_keep_their_own_records(tmp_path: Path, database: str) -> None:
    glacier = write_service(tmp_path, "glacier", {"0001_init.sql": "CREATE TABLE glacier_t (id int);"})
    moraine = write_service(tmp_path, "moraine", {"0001_init.sql": "CREATE TABLE moraine_t (id int);"})
    db_app(database, glacier)
    app = Flask("moraine")
    app.config["GNAR_PG_DSN"] = database
    GnarDB(app, migrations_dir=str(moraine))

    assert {"glacier_t", "moraine_t"} <= tables(database)


RACER = """
import json, os, sys, time
from pathlib import Path
from flask import Flask
from flask_gnar import GnarDB
go = Path(os.environ["GO"])
while not go.exists():
    time.sleep(0.002)
began = time.time()
app = Flask("glacier")
GnarDB(app, dsn=os.environ["DSN"], migrations_dir=os.environ["FOLDER"])
print(json.dumps({"began": began, "ended": time.time()}), flush=True)
"""

RACE = {
    "0001_slopes.sql": """
        CREATE TABLE applied_by (migration text, backend int);
        CREATE TABLE slopes (id serial PRIMARY KEY, name text NOT NULL);
        INSERT INTO applied_by VALUES ('0001', pg_backend_pid());
        -- hold the lock long enough for every replica to be waiting on it
        SELECT pg_sleep(2);
    """,
    "0002_seed.sql": """
        INSERT INTO slopes (name) VALUES ('Corbet''s Couloir');
        INSERT INTO applied_by VALUES ('0002', pg_backend_pid());
    """,
}


@pytest.mark.slow
def test_replicas_starting_together_apply_each_migration_once(tmp_path: Path, database: str) -> None:
    folder = write_service(tmp_path, "glacier", RACE)
    go = tmp_path / "go"
    replicas = [start_process(RACER, DSN=database, FOLDER=str(folder), GO=str(go)) for _ in range(4)]
    go.touch()
    outputs = []
    for process in replicas:
        out, _ = process.communicate(timeout=120)
        outputs.append(out)
        assert process.returncode == 0, out
    timings = [json.loads(out.strip().splitlines()[-1]) for out in outputs]

    # every replica began before the first had finished: they really ran together
    assert max(t["began"] for t in timings) < min(t["ended"] for t in timings)
    assert query(database, "SELECT migration, count(*) FROM applied_by GROUP BY migration ORDER BY 1") == [
        ("0001", 1), ("0002", 1)
    ]
    assert query(database, "SELECT count(*) FROM slopes") == [(1,)]
    assert recorded(database) == ["0001_slopes.sql", "0002_seed.sql"]


def test_an_app_that_is_no_package_has_no_migrations(database: str) -> None:
    create_app("no_such_package_here", no_jwt=True, config={"GNAR_PG_DSN": database})

    assert tables(database) == set()
