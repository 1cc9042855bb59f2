"""create_app's JSON provider and session interface behave as Flask's own, and cost less."""

import dataclasses
import datetime
import decimal
import uuid

import pytest
from flask import Flask, json, jsonify, session
from markupsafe import Markup

from flask_gnar import create_app

PAYLOADS = [
    {"zebra": 1, "apple": [3, 2, 1], "nested": {"b": None, "a": True}},
    {"when": datetime.datetime(2026, 12, 2, 1, 30, tzinfo=datetime.timezone.utc),
     "day": datetime.date(2026, 12, 2), "id": uuid.UUID(int=7)},
    {"snow": "Schnee ❄ neige", "markup": Markup("<b>pow</b>")},
    [1.5, "two", None, float("inf")],
    "just a string",
]


@dataclasses.dataclass
class Slope:
    name: str
    steep: bool


def twin_apps():
    """A create_app service and a bare Flask app with the same view."""
    apps = [create_app("twins", no_db=True, no_jwt=True, config={"TESTING": True}), Flask("bare")]
    for app in apps:
        app.add_url_rule("/echo/<int:index>", "echo", lambda index: jsonify(PAYLOADS[index]))
        app.add_url_rule("/slope", "slope", lambda: jsonify(Slope("powder", True)))
        app.add_url_rule("/kwargs", "kwargs", lambda: jsonify(b=2, a=1))
    return apps


def bodies(app, paths):
    client = app.test_client()
    return [(response.data, response.mimetype) for response in map(client.get, paths)]


PATHS = [f"/echo/{index}" for index in range(len(PAYLOADS))] + ["/slope", "/kwargs"]


def test_jsonify_answers_byte_for_byte_what_flask_answers():
    gnar_app, bare = twin_apps()
    assert bodies(gnar_app, PATHS) == bodies(bare, PATHS)
    assert bodies(gnar_app, ["/slope"]) == [(b'{"name":"powder","steep":true}\n', "application/json")]


@pytest.mark.parametrize("settings", [
    {"sort_keys": False},
    {"ensure_ascii": False},
    {"compact": False},
    {"default": staticmethod(lambda value: f"<{type(value).__name__}>")},
    {"mimetype": "application/vnd.snow+json"},
])
def test_changing_the_providers_settings_after_start_up_changes_the_output_as_with_flask(settings):
    gnar_app, bare = twin_apps()
    before = bodies(gnar_app, PATHS)
    for app in (gnar_app, bare):
        for name, value in settings.items():
            setattr(app.json, name, value.__func__ if isinstance(value, staticmethod) else value)
    after = bodies(gnar_app, PATHS)
    assert after == bodies(bare, PATHS)
    assert after != before


def test_debug_mode_pretty_prints_as_flask_does():
    gnar_app, bare = twin_apps()
    gnar_app.debug = bare.debug = True
    pretty = bodies(gnar_app, PATHS)
    assert pretty == bodies(bare, PATHS) and b'\n  "apple": [\n' in pretty[0][0]


def test_json_dumps_with_and_without_arguments_matches_flask():
    gnar_app, bare = twin_apps()
    value = {"b": decimal.Decimal("1.5"), "a": datetime.date(2026, 1, 1)}
    outputs = []
    for app in (gnar_app, bare):
        with app.app_context():
            outputs.append((json.dumps(value), json.dumps(value, indent=4), json.dumps(value, separators=(",", ":"))))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == '{"a": "Thu, 01 Jan 2026 00:00:00 GMT", "b": "1.5"}'


def session_views(app):
    @app.get("/read")
    def read():
        return jsonify(snow=session.get("snow"))

    @app.get("/write")
    def write():
        session["snow"] = "deep"
        return jsonify(ok=True)

    return app


def test_without_a_secret_key_the_session_reads_empty_and_refuses_writes_as_in_flask(caplog):
    app = session_views(create_app("nosecret", no_db=True, no_jwt=True, config={"TESTING": True}))
    client = app.test_client()
    assert client.get("/write").status_code == 500
    assert "RuntimeError: The session is unavailable because no secret key was set" in caplog.text
    assert client.get("/read").json == {"snow": None}
    assert "Set-Cookie" not in client.get("/read").headers


def test_with_a_secret_key_the_session_cookie_round_trips():
    app = session_views(create_app("secret", no_db=True, no_jwt=True,
                                   config={"TESTING": True, "SECRET_KEY": "s" * 32}))
    client = app.test_client()
    assert "session=" in client.get("/write").headers["Set-Cookie"]
    assert client.get("/read").json == {"snow": "deep"}
    assert app.test_client().get("/read").json == {"snow": None}
