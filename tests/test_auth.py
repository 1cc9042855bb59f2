"""GnarJWT: settings, JSON errors for bad tokens, the sliding token, identities, bjoern."""

from __future__ import annotations

import time
import logging
from datetime import timedelta
from typing import Any

import jwt as pyjwt
import pytest
import requests
from flask import Flask, jsonify
from flask.testing import FlaskClient
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    decode_token,
    get_jwt_identity,
    jwt_required,
)

from auth_support import SECRET, alg_none, build_app, forged, served
from flask_gnar import ConfigError, GnarJWT, create_app, signals
from flask_gnar.state import get_state


@pytest.fixture
def service() -> Flask:
    return build_app({"GNAR_JWT_SECRET_KEY": SECRET})


@pytest.fixture
def client(service: Flask) -> FlaskClient:
    return service.test_client()


def token_for(app: Flask, identity: Any = 42, **kwargs: Any) -> str:
    with app.app_context():
        return create_access_token(identity=identity, **kwargs)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(app: Flask, token: str) -> dict[str, Any]:
    with app.app_context():
        return decode_token(token)


# --- the sliding token -------------------------------------------------------------


def test_missing_token_is_401_json_without_a_new_token(client: FlaskClient) -> None:
    response = client.get("/lifts/1")
    assert response.status_code == 401
    assert response.get_json() == {"error": "Missing Authorization Header"}
    assert "Authorization" not in response.headers


def test_valid_token_gets_a_fresh_token_for_the_same_identity(service: Flask, client: FlaskClient) -> None:
    token = token_for(service, 42)
    response = client.get("/lifts/7", headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json() == {"lift": 7, "method": "GET", "identity": 42}
    scheme, new_token = response.headers["Authorization"].split(" ")
    assert scheme == "Bearer" and new_token != token
    old, new = claims_of(service, token), claims_of(service, new_token)
    assert new["sub"] == old["sub"] == "42"
    assert new["type"] == "access" and new["jti"] != old["jti"] and new["exp"] >= old["exp"]
    again = client.get("/lifts/7", headers=bearer(new_token))
    assert again.status_code == 200 and again.get_json()["identity"] == 42


def test_every_routed_method_on_a_protected_route_slides(service: Flask, client: FlaskClient) -> None:
    token = token_for(service)
    for method in ("PATCH", "DELETE"):
        response = client.open("/lifts/3", method=method, headers=bearer(token))
        assert response.get_json()["method"] == method
        assert response.headers["Authorization"].startswith("Bearer ")


def test_unprotected_route_gets_no_token_even_when_one_was_sent(service: Flask, client: FlaskClient) -> None:
    response = client.get("/runs", headers=bearer(token_for(service)))
    assert response.status_code == 200
    assert "Authorization" not in response.headers


def test_custom_claims_survive_the_refresh(service: Flask, client: FlaskClient) -> None:
    login = client.post("/login", json={"identity": 5}).get_json()
    first = client.get("/lifts/1", headers=bearer(login["access_token"]))
    second = client.get("/lifts/1", headers={"Authorization": first.headers["Authorization"]})
    claims = claims_of(service, second.headers["Authorization"].split(" ")[1])
    assert claims["role"] == "patrol"
    assert second.get_json()["identity"] == 5


def test_no_new_token_for_refresh_tokens_or_when_the_view_set_its_own(service: Flask) -> None:
    from flask_jwt_extended import jwt_required as required

    @service.post("/refresh")
    @required(refresh=True)
    def refresh() -> Any:
        return jsonify(ok=True)

    @service.get("/switch")
    @required()
    def switch() -> Any:
        return jsonify(ok=True), 200, {"Authorization": "Bearer chosen-by-the-view"}

    client = service.test_client()
    with service.app_context():
        refresh_token = create_refresh_token(identity=42)
    refreshed = client.post("/refresh", headers=bearer(refresh_token))
    assert refreshed.status_code == 200 and "Authorization" not in refreshed.headers
    own = client.get("/switch", headers=bearer(token_for(service)))
    assert own.headers["Authorization"] == "Bearer chosen-by-the-view"


def test_error_in_a_protected_view_is_500_json_and_keeps_the_session(service: Flask, client: FlaskClient) -> None:
    response = client.get("/crash", headers=bearer(token_for(service)))
    assert response.status_code == 500
    assert response.get_json()["error"] == "the lift jammed"
    assert response.headers["Authorization"].startswith("Bearer ")


# --- bad tokens ----------------------------------------------------------------------


def from_another_secret(app: Flask) -> str:
    other = build_app({"GNAR_JWT_SECRET_KEY": "another-secret-another-secret-another!"})
    return token_for(other)


@pytest.mark.parametrize(
    ("make_token", "status", "error"),
    [
        (forged, 401, "Signature verification failed"),
        (alg_none, 401, "The specified alg value is not allowed"),
        (lambda token: token[:-6], 422, "Invalid crypto padding"),
        (lambda token: token[:25], 422, "Not enough segments"),
        (lambda token: "x" + token, 422, "Invalid header padding"),
    ],
    ids=["forged", "alg-none", "truncated-signature", "truncated", "garbage"],
)
def test_bad_tokens_answer_json_errors(
    service: Flask, client: FlaskClient, make_token: Any, status: int, error: str
) -> None:
    response = client.get("/lifts/1", headers=bearer(make_token(token_for(service))))
    assert response.status_code == status
    assert response.get_json() == {"error": error}
    assert "Authorization" not in response.headers


def test_token_from_another_secret_is_401(service: Flask, client: FlaskClient) -> None:
    response = client.get("/lifts/1", headers=bearer(from_another_secret(service)))
    assert (response.status_code, response.get_json()) == (401, {"error": "Signature verification failed"})


def test_expired_token_is_401(service: Flask, client: FlaskClient) -> None:
    token = token_for(service, expires_delta=timedelta(seconds=-1))
    response = client.get("/lifts/1", headers=bearer(token))
    assert (response.status_code, response.get_json()) == (401, {"error": "Token has expired"})
    assert "Authorization" not in response.headers


def test_refresh_token_where_an_access_token_is_expected_is_422(service: Flask, client: FlaskClient) -> None:
    with service.app_context():
        refresh = create_refresh_token(identity=42)
    response = client.get("/lifts/1", headers=bearer(refresh))
    assert (response.status_code, response.get_json()) == (422, {"error": "Only non-refresh tokens are allowed"})


@pytest.mark.parametrize(
    ("header", "status", "error"),
    [
        ("Bearer", 422, "Bad Authorization header. Expected 'Authorization: Bearer <JWT>'"),
        ("Basic dXNlcjpwYXNz", 401, "Missing 'Bearer' type in 'Authorization' header. Expected 'Authorization: Bearer <JWT>'"),
    ],
)
def test_malformed_authorization_header(client: FlaskClient, header: str, status: int, error: str) -> None:
    response = client.get("/lifts/1", headers={"Authorization": header})
    assert (response.status_code, response.get_json()) == (status, {"error": error})


def test_seed_status_switch_answers_200_with_the_same_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_SEED_ERROR_STATUS", "1")
    app = build_app({"GNAR_JWT_SECRET_KEY": SECRET})
    client = app.test_client()
    expired = token_for(app, expires_delta=timedelta(seconds=-1))
    answers = [
        client.get("/lifts/1"),
        client.get("/lifts/1", headers=bearer(expired)),
        client.get("/lifts/1", headers=bearer(forged(token_for(app)))),
        client.get("/lifts/1", headers=bearer("abc")),
    ]
    assert [(r.status_code, r.get_json()) for r in answers] == [
        (200, {"error": "Missing Authorization Header"}),
        (200, {"error": "Token has expired"}),
        (200, {"error": "Signature verification failed"}),
        (200, {"error": "Not enough segments"}),
    ]


def test_gnar_errors_through_create_app_does_not_shadow_jwt_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_JWT_SECRET_KEY", SECRET)
    app = create_app("snowy", no_db=True)

    @app.get("/secret")
    @jwt_required()
    def secret() -> Any:
        return jsonify(ok=True)

    client = app.test_client()
    assert (client.get("/secret").status_code, client.get("/secret").get_json()) == (
        401, {"error": "Missing Authorization Header"},
    )
    expired = token_for(app, expires_delta=timedelta(seconds=-1))
    assert client.get("/secret", headers=bearer(expired)).status_code == 401
    assert client.get("/secret", headers=bearer("a.b")).status_code == 422
    ok = client.get("/secret", headers=bearer(token_for(app)))
    assert ok.status_code == 200 and ok.headers["Authorization"].startswith("Bearer ")
    assert client.get("/lifts/nope").status_code == 404


def test_no_jwt_skips_the_extension() -> None:
    app = create_app("snowy", no_db=True, no_jwt=True)
    assert "GnarJWT" not in get_state(app).extensions
    with pytest.raises(AttributeError, match="GnarJWT"):
        get_state(app).jwt


# --- identities ----------------------------------------------------------------------


@pytest.mark.parametrize("identity", [42, {"id": 7, "roles": ["patrol"]}, "ic3b3rg", [1, 2], 0])
def test_identities_of_any_json_type_round_trip(service: Flask, client: FlaskClient, identity: Any) -> None:
    response = client.get("/lifts/1", headers=bearer(token_for(service, identity)))
    assert response.get_json()["identity"] == identity
    refreshed = client.get("/lifts/1", headers={"Authorization": response.headers["Authorization"]})
    assert refreshed.get_json()["identity"] == identity


def test_subject_is_a_string_for_other_libraries(service: Flask) -> None:
    token = token_for(service, {"id": 7})
    claims = pyjwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == '{"id":7}'
    with service.test_request_context(headers=bearer(token)):
        from flask_jwt_extended import verify_jwt_in_request

        verify_jwt_in_request()
        assert get_jwt_identity() == '{"id":7}'


@pytest.mark.parametrize(("identity", "message"), [(object(), "got object"), (None, "cannot be None")])
def test_unserialisable_identity_fails_at_token_creation(service: Flask, identity: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        token_for(service, identity)


# --- settings --------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_JWT_SECRET_KEY", SECRET)
    monkeypatch.setenv("GNAR_JWT_ACCESS_TOKEN_EXPIRES_MINUTES", "30")
    app = Flask(__name__)
    received: list[Any] = []
    with signals.jwt_configured.connected_to(lambda sender, **kw: received.append(kw), app):
        GnarJWT(app)
    assert isinstance(get_state(app).jwt, JWTManager)
    assert received == [{"jwt": get_state(app).jwt}]
    claims = claims_of(app, token_for(app))
    assert claims["exp"] - claims["iat"] == 30 * 60
    assert pyjwt.decode(token_for(app), SECRET, algorithms=["HS256"])["sub"] == "42"


def test_default_expiry_is_15_minutes(service: Flask) -> None:
    claims = claims_of(service, token_for(service))
    assert claims["exp"] - claims["iat"] == 15 * 60


@pytest.mark.parametrize("value", ["abc", "0", "-5"])
def test_bad_expiry_stops_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GNAR_JWT_ACCESS_TOKEN_EXPIRES_MINUTES", value)
    with pytest.raises(ConfigError, match="^GNAR_JWT_ACCESS_TOKEN_EXPIRES_MINUTES: "):
        GnarJWT(Flask(__name__), secret_key=SECRET)


@pytest.mark.parametrize("value", ["100000000000000000000", "inf", "nan"])
def test_an_expiry_past_the_year_9999_stops_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """datetime cannot hold such an expiry: every login would fail with OverflowError."""
    monkeypatch.setenv("GNAR_JWT_ACCESS_TOKEN_EXPIRES_MINUTES", value)
    with pytest.raises(ConfigError) as caught:
        GnarJWT(Flask(__name__), secret_key=SECRET)
    assert str(caught.value).startswith(
        "GNAR_JWT_ACCESS_TOKEN_EXPIRES_MINUTES: expected a number above 0 and at most "
    )
    assert "before the year 9999" in str(caught.value)


def test_an_expiry_option_past_the_year_9999_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="^argument for JWT_ACCESS_TOKEN_EXPIRES_MINUTES: "):
        GnarJWT(Flask(__name__), secret_key=SECRET, access_token_expires=timedelta(days=999999999))


def test_a_thousand_year_expiry_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    minutes = 1000 * 365 * 24 * 60
    monkeypatch.setenv("GNAR_JWT_ACCESS_TOKEN_EXPIRES_MINUTES", str(minutes))
    app = Flask(__name__)
    GnarJWT(app, secret_key=SECRET)
    claims = claims_of(app, token_for(app))
    assert claims["exp"] - claims["iat"] == minutes * 60


def test_missing_secret_stops_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_JWT_SECRET_KEY", "")
    with pytest.raises(ConfigError, match="^GNAR_JWT_SECRET_KEY: is required in production"):
        GnarJWT(production_app())
    with pytest.raises(ConfigError, match="^MY_APP_JWT_SECRET_KEY"):
        create_app("snowy", production=True, no_db=True, env_prefix="MY_APP")


def production_app() -> Flask:
    app = Flask(__name__)
    app.config["GNAR_PRODUCTION"] = True
    return app


def test_flask_jwt_extended_own_secret_setting_is_honoured() -> None:
    app = production_app()
    app.config["JWT_SECRET_KEY"] = SECRET
    GnarJWT(app)
    assert pyjwt.decode(token_for(app), SECRET, algorithms=["HS256"])["sub"] == "42"
    bad = production_app()
    bad.config["JWT_SECRET_KEY"] = 12345
    with pytest.raises(ConfigError, match=r"^app.config\['JWT_SECRET_KEY'\]: is malformed"):
        GnarJWT(bad)


def test_missing_secret_in_development_warns_and_works(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)
    with caplog.at_level(logging.WARNING, logger="flask_gnar.auth"):
        GnarJWT(app)
    assert "GNAR_JWT_SECRET_KEY is not set" in caplog.text
    client = app.test_client()

    @app.get("/p")
    @jwt_required()
    def protected() -> Any:
        return "ok"

    assert client.get("/p", headers=bearer(token_for(app))).status_code == 200


def test_secret_is_never_logged_nor_echoed(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("GNAR_JWT_SECRET_KEY", "short-secret-value")
    with caplog.at_level(logging.DEBUG):
        GnarJWT(Flask(__name__))
    assert "GNAR_JWT_SECRET_KEY is shorter than 32 bytes" in caplog.text
    assert "short-secret-value" not in caplog.text
    with pytest.raises(ConfigError) as caught:
        GnarJWT(Flask(__name__), secret_key=12345)
    assert str(caught.value) == "argument for JWT_SECRET_KEY: is malformed"


def test_two_apps_keep_their_own_secret() -> None:
    first, second = build_app({"GNAR_JWT_SECRET_KEY": SECRET}), build_app()
    assert get_state(first).jwt is not get_state(second).jwt
    response = second.test_client().get("/lifts/1", headers=bearer(token_for(first)))
    assert response.status_code == 401


# --- a real server -----------------------------------------------------------------------


def test_bjoern_serves_the_protected_route_with_a_sliding_token() -> None:
    with served(GNAR_PRODUCTION="1", GNAR_JWT_SECRET_KEY=SECRET) as base:
        missing = requests.get(f"{base}/lifts/1", timeout=5)
        assert missing.status_code == 401
        assert missing.json() == {"error": "Missing Authorization Header"}
        assert missing.headers["Content-Type"] == "application/json"

        token = requests.post(f"{base}/login", json={"identity": 9}, timeout=5).json()["access_token"]
        ok = requests.get(f"{base}/lifts/1", headers=bearer(token), timeout=5)
        assert ok.status_code == 200 and ok.json()["identity"] == 9
        assert "Werkzeug" not in ok.headers.get("Server", "")  # bjoern, not the dev server
        refreshed = ok.headers["Authorization"]
        assert refreshed.startswith("Bearer ") and refreshed != f"Bearer {token}"

        again = requests.patch(f"{base}/lifts/1", headers={"Authorization": refreshed}, timeout=5)
        assert again.status_code == 200 and again.json() == {"lift": 1, "method": "PATCH", "identity": 9}
        assert again.headers["Authorization"].startswith("Bearer ")

        forged_answer = requests.get(f"{base}/lifts/1", headers=bearer(forged(token)), timeout=5)
        assert (forged_answer.status_code, forged_answer.json()) == (401, {"error": "Signature verification failed"})
        assert "Access-Control-Allow-Origin" not in ok.headers  # production, no origins


def test_production_server_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(AssertionError, match="GNAR_JWT_SECRET_KEY: is required in production"):
        with served(GNAR_PRODUCTION="1"):
            pass


# --- one decode, the library's checks ------------------------------------------------------


def plain_library_app(**config: Any) -> Flask:
    """flask-jwt-extended on its own, as the reference for what a token check answers."""
    app = Flask("reference")
    app.config.update(JWT_SECRET_KEY=SECRET, JWT_ERROR_MESSAGE_KEY="error", **config)
    JWTManager(app)

    @app.get("/lifts/<int:lift_id>")
    @jwt_required()
    def lift(lift_id: int) -> Any:
        return jsonify(lift=lift_id)

    return app


def signed(claims: dict[str, Any], key: str = SECRET, **headers: Any) -> str:
    now = int(time.time())
    return pyjwt.encode({"iat": now, "nbf": now, "exp": now + 60, **claims}, key, algorithm="HS256", headers=headers)


PARITY_CASES = {
    "valid": lambda: signed({"sub": "42", "type": "access"}),
    "no-type-claim": lambda: signed({"sub": "42"}),
    "missing-sub": lambda: signed({"type": "access"}),
    "integer-sub": lambda: signed({"sub": 42}),
    "not-yet-valid": lambda: signed({"sub": "42", "nbf": int(time.time()) + 3600}),
    "issued-in-the-future": lambda: signed({"sub": "42", "iat": int(time.time()) + 3600}),
    "expired": lambda: signed({"sub": "42", "exp": int(time.time()) - 10}),
    "exp-not-a-number": lambda: signed({"sub": "42", "exp": "soon"}),
    "no-exp": lambda: pyjwt.encode({"sub": "42"}, SECRET, algorithm="HS256"),
    "refresh": lambda: signed({"sub": "42", "type": "refresh"}),
    "another-secret": lambda: signed({"sub": "42"}, key="x" * 40),
    "hs512": lambda: pyjwt.encode({"sub": "42"}, SECRET + SECRET, algorithm="HS512"),
    "alg-none": lambda: pyjwt.encode({"sub": "42"}, None, algorithm="none"),
    "not-a-token": lambda: "lift-pass",
}
#: Where GnarJWT answers 401 on purpose (a forgery is not a malformed token).
UNAUTHENTICATED = {"another-secret", "hs512", "alg-none"}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
@pytest.mark.parametrize("config", [{}, {"JWT_DECODE_LEEWAY": 30}], ids=["no-leeway", "leeway"])
def test_single_decode_answers_what_flask_jwt_extended_answers(case: str, config: dict[str, Any]) -> None:
    token = PARITY_CASES[case]()
    reference = plain_library_app(**config).test_client().get("/lifts/1", headers=bearer(token))
    ours = build_app({"GNAR_JWT_SECRET_KEY": SECRET, **config}).test_client().get("/lifts/1", headers=bearer(token))
    expected_status = 401 if case in UNAUTHENTICATED else reference.status_code
    assert (ours.status_code, ours.get_json().get("error")) == (expected_status, reference.get_json().get("error"))


@pytest.mark.parametrize(
    ("claims", "status"),
    [({"aud": "piste"}, 200), ({"aud": ["edge", "piste"]}, 200), ({"aud": "off-piste"}, 422), ({}, 422)],
)
def test_audience_and_issuer_are_checked_like_the_library(claims: dict[str, Any], status: int) -> None:
    config = {"JWT_DECODE_AUDIENCE": "piste"}
    token = signed({"sub": "42", **claims})
    reference = plain_library_app(**config).test_client().get("/lifts/1", headers=bearer(token))
    ours = build_app({"GNAR_JWT_SECRET_KEY": SECRET, **config}).test_client().get("/lifts/1", headers=bearer(token))
    assert reference.status_code == ours.status_code == status
    assert ours.get_json().get("error") == reference.get_json().get("error")
    issuer_app = build_app({"GNAR_JWT_SECRET_KEY": SECRET, "JWT_DECODE_ISSUER": "gnar"})
    issued = issuer_app.test_client().get("/lifts/1", headers=bearer(signed({"sub": "42", "iss": "gnar"})))
    assert issued.status_code == 200
    foreign = issuer_app.test_client().get("/lifts/1", headers=bearer(signed({"sub": "42", "iss": "evil"})))
    assert (foreign.status_code, foreign.get_json()) == (422, {"error": "Invalid issuer"})


def test_expired_loader_still_gets_the_claims(service: Flask, client: FlaskClient) -> None:
    get_state(service).jwt.expired_token_loader(
        lambda header, data: (jsonify(error=f"expired for {data['sub']}", alg=header["alg"]), 401)
    )
    response = client.get("/lifts/1", headers=bearer(token_for(service, 7, expires_delta=timedelta(seconds=-1))))
    assert (response.status_code, response.get_json()) == (401, {"error": "expired for 7", "alg": "HS256"})


def test_a_custom_decode_key_loader_gets_the_library_path(service: Flask, client: FlaskClient) -> None:
    keys = {"blue": SECRET, "black": "black-run-secret-black-run-secret-black!"}
    jwt_manager = get_state(service).jwt
    jwt_manager.decode_key_loader(lambda header, claims: keys[header.get("kid", "blue")])
    black = signed({"sub": "9"}, key=keys["black"], kid="black")
    ok = client.get("/lifts/1", headers=bearer(black))
    assert ok.status_code == 200 and ok.get_json()["identity"] == "9"
    wrong = signed({"sub": "9"}, key=keys["black"], kid="blue")
    assert client.get("/lifts/1", headers=bearer(wrong)).status_code == 401


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Count calls to a PyJWT method (it still runs)."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


@pytest.mark.parametrize(("make_app", "parses"), [(build_app, 2), (plain_library_app, 4)], ids=["gnar", "library"])
def test_the_token_is_verified_once_and_parsed_at_most_twice(
    monkeypatch: pytest.MonkeyPatch, make_app: Any, parses: int
) -> None:
    app = make_app({"GNAR_JWT_SECRET_KEY": SECRET}) if make_app is build_app else make_app()
    token = signed({"sub": "42"})
    verified = count_calls(monkeypatch, pyjwt.api_jws.PyJWS, "_verify_signature")
    parsed = count_calls(monkeypatch, pyjwt.api_jws.PyJWS, "_load")
    response = app.test_client().get("/lifts/1", headers=bearer(token))
    assert response.status_code == 200
    # gnar: one verified decode, then flask-jwt-extended's own header peek; the
    # sliding refresh reuses the verified claims and never decodes again.
    assert (len(verified), len(parsed)) == (1, parses)
