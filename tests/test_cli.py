"""The Flask CLI on a create_app service: routes, shell, run, and the flask gnar group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from flask_gnar.testing import EmbeddedPostgres
from helpers import ROOT, child_env, free_port, output_of, wait_for_http
from service_support import fresh_database, write_service

FLASK = str(Path(sys.executable).with_name("flask"))
SLOPES = {
    "0001_slopes.sql": "CREATE TABLE slopes (id serial PRIMARY KEY, name text NOT NULL);",
    "0002_seed.sql": "INSERT INTO slopes (name) VALUES ('Corbet''s Couloir');",
}


@pytest.fixture
def project(tmp_path: Path, gnar_postgres: EmbeddedPostgres) -> dict[str, str]:
    """The service glacier on disk, its environment pointing at a fresh database."""
    write_service(tmp_path, "glacier", SLOPES)
    return child_env(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        GNAR_PG_DSN=fresh_database(gnar_postgres),
    )


def flask(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLASK, "--app", "glacier.app.main", *args], env=env, input=stdin,
        capture_output=True, text=True, timeout=120,
    )


def start_flask(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [FLASK, "--app", "glacier.app.main", *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def production(env: dict[str, str]) -> dict[str, str]:
    return {**env, "GLACIER_PRODUCTION": "1"}


def test_routes_lists_the_service_routes(project: dict[str, str]) -> None:
    result = flask(project, "routes")

    assert result.returncode == 0, result.stderr
    assert "/slopes" in result.stdout and "/health/ready" in result.stdout


def test_shell_has_the_app_and_its_database(project: dict[str, str]) -> None:
    code = "from flask_gnar import gnar\nprint('service', gnar.name, gnar.db.one('SELECT 41 + 1'))\n"
    result = flask(project, "shell", stdin=code)

    assert result.returncode == 0, result.stderr
    assert "service glacier 42" in result.stdout, result.stdout + result.stderr


def test_run_serves_the_migrated_service(project: dict[str, str]) -> None:
    port = free_port()
    process = start_flask(project, "run", "--port", str(port))
    try:
        response = wait_for_http(f"http://127.0.0.1:{port}/slopes", timeout=60, process=process)
        assert response.status_code == 200, response.text
        assert response.json() == {"slopes": ["Corbet's Couloir"]}
    finally:
        output_of(process)


def test_gnar_groups_migrate_and_serve(project: dict[str, str]) -> None:
    result = flask(project, "gnar", "--help")

    assert result.returncode == 0, result.stderr
    assert "migrate" in result.stdout and "serve" in result.stdout


def test_gnar_migrate_lists_applies_and_fails_naming_the_file(project: dict[str, str]) -> None:
    env = production(project)  # production: nothing is applied at start-up

    listed = flask(env, "gnar", "migrate", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "pending  0001_slopes.sql" in listed.stdout and "pending  0002_seed.sql" in listed.stdout

    applied = flask(env, "gnar", "migrate")
    assert applied.returncode == 0, applied.stderr
    assert "applied 0001_slopes.sql\napplied 0002_seed.sql" in applied.stdout

    listed = flask(env, "gnar", "migrate", "--list")
    assert "applied  0001_slopes.sql" in listed.stdout and "pending" not in listed.stdout
    assert "0 migration(s) applied" in flask(env, "gnar", "migrate").stdout

    folder = Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "glacier" / "migrations"
    (folder / "0003_broken.sql").write_text("ALTER TABLE slopes ADD COLUMN;")
    failed = flask(env, "gnar", "migrate")
    assert failed.returncode == 1
    assert "the migration 0003_broken.sql failed and was rolled back" in failed.stderr, failed.stderr


def test_gnar_serve_runs_bjoern_in_production(project: dict[str, str]) -> None:
    port = free_port()
    env = {**production(project), "GNAR_PG_MIGRATE": "1"}
    process = start_flask(env, "gnar", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2")
    try:
        response = wait_for_http(f"http://127.0.0.1:{port}/slopes", timeout=60, process=process)
        assert response.status_code == 200, response.text
        assert "Werkzeug" not in response.headers.get("Server", "")  # bjoern sends none
        os.killpg(process.pid, signal.SIGTERM)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, out
        assert "Supervisor" in out and "starting 2 bjoern workers" in out
    finally:
        if process.poll() is None:
            output_of(process)


def test_gnar_serve_runs_the_development_server_in_development(project: dict[str, str]) -> None:
    port = free_port()
    process = start_flask(project, "gnar", "serve", "--host", "127.0.0.1", "--port", str(port))
    try:
        response = wait_for_http(f"http://127.0.0.1:{port}/slopes", timeout=60, process=process)
        assert response.status_code == 200, response.text
        assert "Werkzeug" in response.headers["Server"]
    finally:
        output_of(process)


def test_the_examples_answer_the_cli(tmp_path: Path, gnar_postgres: EmbeddedPostgres) -> None:
    env = child_env(PYTHONPATH=os.pathsep.join([str(ROOT / "examples"), str(ROOT)]),
                    GNAR_PG_DSN=fresh_database(gnar_postgres))
    result = subprocess.run([FLASK, "--app", "piste.app.main", "routes"], env=env,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert "/users/signup" in result.stdout


def test_gnar_migrate_says_when_the_database_does_not_answer(project: dict[str, str]) -> None:
    port = free_port()
    env = {**project, "GNAR_PG_DSN": f"host=127.0.0.1 port={port} dbname=glacier user=glacier",
           "GNAR_PG_CONNECT_TIMEOUT": "1"}
    result = flask(env, "gnar", "migrate")  # development: the app starts without its database

    assert result.returncode == 1
    assert f"Error: the database glacier@127.0.0.1:{port}/glacier does not answer" in result.stderr, result.stderr
