"""The pytest plugin users get with flask-gnar, run as a user's own test suite would be."""

import textwrap

import pytest

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
