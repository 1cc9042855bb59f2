"""GnarHealth: liveness and readiness probes."""

from flask import Flask

from flask_gnar import GnarHealth, create_app, get_state


def test_liveness_answers_without_auth(client):
    response = client.get("/health/live")
    assert response.status_code == 200 and response.json == {"live": True}


def test_readiness_runs_the_registered_checks(app, client):
    state = get_state(app)
    state.readiness_checks["database"] = lambda: True
    assert client.get("/health/ready").json == {"ready": True, "checks": {"database": True}}
    state.readiness_checks["sqs"] = lambda: False
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json == {"ready": False, "checks": {"database": True, "sqs": False}}


def test_readiness_turns_false_while_draining(app, client):
    get_state(app).draining = True
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.json["checks"]["draining"] is False


def test_paths_are_configurable_and_probes_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("GNAR_HEALTH_LIVE_PATH", "/livez")
    application = create_app("snowy", no_db=True, no_jwt=True, config={"GNAR_HEALTH_READY_PATH": "/readyz"})
    client = application.test_client()
    assert client.get("/livez").status_code == 200 and client.get("/readyz").status_code == 200
    assert client.get("/health/live").status_code == 404
    monkeypatch.setenv("GNAR_HEALTH_ENABLED", "false")
    quiet = create_app("snowy", no_db=True, no_jwt=True).test_client()
    assert quiet.get("/livez").status_code == 404


def test_works_alone():
    plain = Flask("plain")
    GnarHealth(plain, live_path="/up")
    assert plain.test_client().get("/up").json == {"live": True}
