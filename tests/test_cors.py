"""GnarCORS: open in development, configured origins only in production, preflight."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from flask import Flask
from flask_jwt_extended import create_access_token

from auth_support import SECRET, build_app, served
from flask_gnar import ConfigError, GnarCORS, create_app, signals

ORIGIN = "https://piste.example"
CORS_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
    "Access-Control-Max-Age",
)


def preflight(method: str = "PATCH", origin: str = ORIGIN) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization",
    }


def service(production: bool = False, **config: Any) -> Flask:
    return build_app({"GNAR_JWT_SECRET_KEY": SECRET, "GNAR_PRODUCTION": production, **config})


def cors_headers(response: Any) -> dict[str, str]:
    return {key: response.headers[key] for key in CORS_HEADERS if key in response.headers}


def test_development_allows_any_origin_and_exposes_authorization() -> None:
    response = service().test_client().get("/runs", headers={"Origin": ORIGIN})
    assert cors_headers(response) == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "Authorization",
    }


def test_development_preflight_lists_every_routed_method_and_authorization() -> None:
    response = service().test_client().options("/lifts/1", headers=preflight("DELETE"))
    assert response.status_code == 200
    headers = cors_headers(response)
    assert headers["Access-Control-Allow-Origin"] == "*"
    methods = {method.strip() for method in headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE", "OPTIONS"} <= methods
    assert "PUT" not in methods  # no route answers PUT
    assert headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert headers["Access-Control-Max-Age"] == "600"


def test_preflight_of_a_protected_route_needs_no_token() -> None:
    response = service().test_client().options("/lifts/1", headers=preflight())
    assert response.status_code == 200
    assert "error" not in response.get_data(as_text=True)


def test_error_answers_carry_cors_headers_so_browsers_can_read_them() -> None:
    client = service().test_client()
    for path, status in (("/lifts/1", 401), ("/nowhere", 404)):
        response = client.get(path, headers={"Origin": ORIGIN})
        assert response.status_code == status
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_production_sends_no_cors_headers_by_default() -> None:
    client = service(production=True).test_client()
    assert cors_headers(client.get("/runs", headers={"Origin": ORIGIN})) == {}
    answer = client.options("/lifts/1", headers=preflight())
    assert cors_headers(answer) == {}
    assert "Vary" not in answer.headers


def test_production_allows_only_the_configured_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_CORS_ORIGINS", f"{ORIGIN}, https://edge.example")
    client = service(production=True).test_client()
    allowed = client.options("/lifts/1", headers=preflight("PATCH"))
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "PATCH" in allowed.headers["Access-Control-Allow-Methods"]
    assert allowed.headers["Vary"] == "Origin"
    other = client.get("/runs", headers={"Origin": "https://evil.example"})
    assert cors_headers(other) == {}
    assert other.headers["Vary"] == "Origin"
    edge = client.get("/runs", headers={"Origin": "https://edge.example"})
    assert edge.headers["Access-Control-Allow-Origin"] == "https://edge.example"


def test_explicit_options_win_and_any_origin_can_be_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_CORS_ORIGINS", ORIGIN)
    app = Flask(__name__)
    app.config["GNAR_PRODUCTION"] = True
    app.add_url_rule("/", "index", lambda: "ok")
    received: list[Any] = []
    with signals.cors_configured.connected_to(lambda sender, **kw: received.append(kw), app):
        GnarCORS(app, origins=["*"], allow_headers=["Authorization", "X-Trace"], max_age=60)
    assert received == [{"origins": ["*"]}]
    response = app.test_client().options("/", headers=preflight("GET", "https://any.example"))
    assert cors_headers(response) == {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
        "Access-Control-Allow-Headers": "Authorization, X-Trace",
        "Access-Control-Expose-Headers": "Authorization",
        "Access-Control-Max-Age": "60",
    }


def test_an_empty_origin_list_turns_cors_off_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_CORS_ORIGINS", "")
    assert cors_headers(service().test_client().get("/runs", headers={"Origin": ORIGIN})) == {}


@pytest.mark.parametrize(("name", "value"), [("CORS_MAX_AGE", "abc"), ("CORS_MAX_AGE", "0")])
def test_bad_settings_stop_start_up(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"GNAR_{name}", value)
    with pytest.raises(ConfigError, match=f"^GNAR_{name}: "):
        GnarCORS(Flask(__name__))


def test_create_app_registers_cors_after_jwt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_JWT_SECRET_KEY", SECRET)
    order: list[tuple[Any, str]] = []
    with signals.jwt_configured.connected_to(lambda sender, **kw: order.append((sender, "jwt"))), \
            signals.cors_configured.connected_to(lambda sender, **kw: order.append((sender, "cors"))):
        app = create_app("snowy", no_db=True)
    assert [step for sender, step in order if sender is app] == ["jwt", "cors"]
    response = app.test_client().options("/lifts/", headers=preflight("GET"))
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_bjoern_answers_preflight_and_exposes_the_refreshed_token() -> None:
    with served(GNAR_PRODUCTION="1", GNAR_JWT_SECRET_KEY=SECRET, GNAR_CORS_ORIGINS=ORIGIN) as base:
        answer = requests.options(f"{base}/lifts/4", headers=preflight("DELETE"), timeout=5)
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "DELETE" in answer.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in answer.headers["Access-Control-Allow-Headers"]

        with build_app({"GNAR_JWT_SECRET_KEY": SECRET}).app_context():
            token = create_access_token(identity=3)
        deleted = requests.delete(
            f"{base}/lifts/4", headers={"Origin": ORIGIN, "Authorization": f"Bearer {token}"}, timeout=5
        )
        assert deleted.status_code == 200 and deleted.json()["method"] == "DELETE"
        assert deleted.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert deleted.headers["Access-Control-Expose-Headers"] == "Authorization"
        assert deleted.headers["Authorization"].startswith("Bearer ")

        stranger = requests.get(f"{base}/runs", headers={"Origin": "https://evil.example"}, timeout=5)
        assert "Access-Control-Allow-Origin" not in stranger.headers


def test_a_preflight_to_a_url_or_method_the_app_refuses_still_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Browsers turn a preflight that is not 2xx into a network error; the real request answers."""
    monkeypatch.setenv("GNAR_CORS_ORIGINS", ORIGIN)
    client = service(production=True).test_client()
    for path in ("/nowhere", "/runs"):
        answer = client.options(path, headers=preflight("PATCH"))
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "PATCH" in answer.headers["Access-Control-Allow-Methods"]
    assert client.patch("/nowhere", headers={"Origin": ORIGIN}).status_code == 404
    refused = client.patch("/runs", headers={"Origin": ORIGIN})
    assert refused.status_code == 405
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    stranger = client.options("/nowhere", headers=preflight("PATCH", "https://evil.example"))
    assert stranger.status_code == 404 and cors_headers(stranger) == {}
