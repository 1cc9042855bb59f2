"""GnarErrors: JSON errors that keep their HTTP status."""

import logging

import pytest
from flask import Flask, abort

from flask_gnar import GnarErrors, create_app


def build(production=False, **config):
    return create_app("snowy", production=production, no_db=True, no_jwt=True, config=config)


def test_unknown_url_answers_404_json(client):
    response = client.get("/no/such/run")
    assert response.status_code == 404
    assert response.is_json and "not found" in response.json["error"].lower()


def test_abort_keeps_its_status_and_description(client):
    response = client.get("/lifts/t-bar")
    assert response.status_code == 404
    assert response.json == {"error": "no lift named t-bar"}


def test_wrong_method_answers_405_with_the_allow_header(client):
    response = client.delete("/runs/")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert "error" in response.json


def test_unhandled_exception_answers_500_with_traceback_in_development(client, caplog):
    with caplog.at_level(logging.ERROR):
        response = client.get("/lifts/crash")
    assert response.status_code == 500
    assert response.json["error"] == "the lift jammed"
    assert "RuntimeError: the lift jammed" in response.json["traceback"]
    assert any("the lift jammed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_production_hides_the_traceback_and_the_message():
    response = build(production=True).test_client().get("/lifts/crash")
    assert response.status_code == 500
    assert response.json == {"error": "Internal Server Error"}


def test_traceback_switch_overrides_the_mode():
    response = build(production=True, GNAR_ERROR_TRACEBACK=True).test_client().get("/lifts/crash")
    assert "traceback" in response.json


@pytest.mark.parametrize("path", ["/lifts/crash", "/lifts/t-bar", "/nowhere"])
def test_seed_status_switch_answers_200_like_gnar_gear(path, monkeypatch):
    monkeypatch.setenv("GNAR_SEED_ERROR_STATUS", "1")
    response = build().test_client().get(path)
    assert response.status_code == 200
    assert "error" in response.json


def test_works_alone_on_a_plain_flask_app():
    plain = Flask("plain")
    GnarErrors(plain)

    @plain.get("/teapot")
    def teapot():
        abort(418)

    @plain.get("/boom")
    def boom():
        raise ValueError("no snow")

    client = plain.test_client()
    assert client.get("/teapot").status_code == 418
    boom_response = client.get("/boom")
    assert (boom_response.status_code, boom_response.json["error"]) == (500, "no snow")


def test_redirects_are_not_turned_into_errors(client):
    response = client.get("/lifts")
    assert response.status_code == 308
    assert response.headers["Location"].endswith("/lifts/")
