"""The pytest plugin users get with flask-gnar, run as a user's own test suite would be."""

import itertools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import ROOT

SERVICE_API = '''
from flask import Blueprint, jsonify
from flask_jwt_extended import get_jwt_identity, jwt_required

from flask_gnar import gnar

blueprint = Blueprint("trails", __name__, url_prefix="/trails")


@blueprint.get("/count")
def count():
    return jsonify({"count": gnar.db.one("SELECT count(*) FROM pg_database")})


@blueprint.get("/mine")
@jwt_required()
def mine():
    return jsonify({"rider": get_jwt_identity()})
'''

USER_TESTS = '''
import pytest


@pytest.fixture
def app(gnar_app):
    return gnar_app


def test_database_route(client):
    assert client.get("/trails/count").json["count"] >= 1


def test_protected_route_with_auth_headers(client, gnar_auth_headers):
    assert client.get("/trails/mine").status_code == 401
    answer = client.get("/trails/mine", headers=gnar_auth_headers("rider-7"))
    assert answer.json == {"rider": "rider-7"}
    assert answer.headers["Authorization"].startswith("Bearer ")


def test_aws_stand_in(gnar_create_app, gnar_aws):
    app = gnar_create_app("trailmap", no_db=True)
    with app.app_context():
        from flask_gnar import gnar
        import boto3
        boto3.client("sqs", endpoint_url=gnar_aws.endpoint_url).create_queue(QueueName="t")
        assert gnar.send_sqs_message("t", "hello")["MessageId"]
'''


@pytest.mark.slow
def test_a_users_suite_runs_on_the_plugin_fixtures(pytester):
    package = pytester.path / "trailmap"
    (package / "app" / "trails").mkdir(parents=True)
    for init in (package, package / "app", package / "app" / "trails"):
        (init / "__init__.py").write_text("")
    (package / "app" / "trails" / "apis.py").write_text(textwrap.dedent(SERVICE_API))
    pytester.makeini("[pytest]\ngnar_app = trailmap\n")
    pytester.makepyfile(test_trailmap=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=180)
    result.assert_outcomes(passed=3)


def test_gnar_app_without_the_ini_option_says_what_to_add(pytester):
    pytester.makepyfile(test_x="def test_x(gnar_app):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.stdout.fnmatch_lines(["*gnar_app = <package>*"])
    assert result.ret != 0


# --- tried as a new user would: a project of its own, flask-gnar from a fresh venv ---------


def full_example(package):
    """The files of the full example in docs/testing.rst, for ``package`` instead of ``piste``.

    Each code block there starts with a ``# <path>`` line; the layout's packages get an
    empty ``__init__.py``.
    """
    text = (ROOT / "docs" / "testing.rst").read_text()
    section = text.split("\nA full example\n", 1)[1]
    files = {}
    for block in re.split(r"^\.\. code-block:: \w+\n", section, flags=re.M)[1:]:
        lines = itertools.takewhile(lambda line: not line or line.startswith("   "), block.splitlines())
        body = textwrap.dedent("\n".join(lines)).strip("\n")
        first, _, rest = body.partition("\n")
        files[first.removeprefix("# ").replace("piste", package)] = rest.replace("piste", package) + "\n"
    for path in list(files):
        for parent in Path(path).parents:
            if parent.parts and parent.parts[0] == package:
                files.setdefault(str(parent / "__init__.py"), "")
    return files


def write_project(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def user_env(**extra):
    """The machine's environment, without this suite's settings and import paths."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("GNAR_", "AWS_", "SNOWY_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))}
    env.update(extra)
    return env


def run(command, cwd, env, timeout):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_new_project_tests_through_the_plugin_without_a_development_database(tmp_path):
    project, venv, home, data = (tmp_path / d for d in ("project", "venv", "home", "xdg-data"))
    files = full_example("snowy")
    assert 'create_app("snowy", production=False' in files["snowy/app/main.py"]
    assert "gnar_app" in files["tests/conftest.py"]
    write_project(project, files)
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, user_env(), 120)
    run([str(venv / "bin" / "pip"), "install", "-q", f"{ROOT}[test]"], tmp_path, user_env(), 800)

    home.mkdir()
    env = user_env(HOME=str(home), XDG_DATA_HOME=str(data))
    output = run([str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q"],
                 project, env, 300)
    assert "3 passed" in output, output
    # no development database: the scan did not import snowy/app/main.py
    leftovers = [str(p) for p in (*home.rglob("flask-gnar"), *data.rglob("flask-gnar"))]
    assert leftovers == [] and not data.exists(), leftovers
