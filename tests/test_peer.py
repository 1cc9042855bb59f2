"""GnarPeer: peer calls against real flask-gnar services served by bjoern on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask_jwt_extended import JWTManager, create_access_token
from helpers import free_port
from peer_support import JWT_SECRET, CountingProxy, RawListener, Service, summit_service

from flask_gnar import (
    ConfigError,
    GnarError,
    GnarErrors,
    GnarPeer,
    NotInitialisedError,
    PeerNotFound,
    PeerTimeout,
    PeerUnavailable,
    create_app,
    gnar,
    signals,
)


@pytest.fixture(scope="module")
def summit() -> Iterator[Service]:
    """One ``summit`` service (bjoern, production) shared by this module's tests."""
    with summit_service() as service:
        yield service


def make_caller(production: bool = False, env_prefix: str = "GNAR", **config: Any) -> Flask:
    """An in-process flask-gnar app with the ``relay`` view and a JWTManager."""
    app = create_app(
        "summit",
        production=production,
        port=free_port(),
        env_prefix=env_prefix,
        blueprint_modules="relay",
        no_db=True,
        no_jwt=True,
        config={
            "TESTING": True,
            "JWT_SECRET_KEY": JWT_SECRET,
            "GNAR_PEER_BACKOFF_SECONDS": 0,
            **config,
        },
    )
    JWTManager(app)
    return app


def echo_through(app: Flask, service: str = "summit") -> dict[str, Any]:
    with app.app_context():
        response = gnar.peer(service).get("/echo", params={"run": "black"})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert body["method"] == "GET" and body["args"] == {"run": "black"}
    return body


# --- discovery ------------------------------------------------------------------------


def test_explicit_url_from_environment(summit: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_PEER_SUMMIT_URL", summit.url)
    echo_through(make_caller())


def test_explicit_url_from_app_config_with_a_custom_prefix(summit: Service) -> None:
    echo_through(make_caller(env_prefix="MY_APP", GNAR_PEER_SUMMIT_URL=summit.url + "/"))


def test_peers_option_on_a_plain_flask_app(summit: Service) -> None:
    app = Flask(__name__)
    GnarPeer(app, peers={"summit": summit.url})
    echo_through(app)


@pytest.mark.parametrize("value", ["{address}", "http://{address}", "tcp://{address}"])
def test_seed_variable_in_development_is_prefixed(
    summit: Service, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GNAR_SUMMIT_SERVICE_PORT", value.format(address=summit.address))
    echo_through(make_caller(production=False))


@pytest.mark.parametrize("value", ["{address}", "http://{address}"])
def test_seed_variable_in_production_is_unprefixed(
    summit: Service, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SUMMIT_SERVICE_PORT", value.format(address=summit.address))
    echo_through(make_caller(production=True))


@pytest.mark.parametrize("production", [True, False])
def test_kubernetes_host_and_port(
    summit: Service, monkeypatch: pytest.MonkeyPatch, production: bool
) -> None:
    monkeypatch.setenv("SUMMIT_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("SUMMIT_SERVICE_PORT", str(summit.port))
    echo_through(make_caller(production=production))


def test_kubernetes_docker_link_form(summit: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUMMIT_PORT", f"tcp://{summit.address}")
    echo_through(make_caller(production=True))


def test_dashed_service_names_map_to_kubernetes_variables(
    summit: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER_SERVICE_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("USER_SERVICE_SERVICE_PORT", str(summit.port))
    echo_through(make_caller(production=True), service="user-service")


@pytest.mark.parametrize(
    "variables",
    [
        {"GNAR_PEER_SUMMIT_URL": "http://{live}", "SUMMIT_SERVICE_PORT": "{dead}"},
        {"SUMMIT_SERVICE_PORT": "{live}", "SUMMIT_SERVICE_HOST": "10.0.0.7", "SUMMIT_PORT": "tcp://{dead}"},
        {"SUMMIT_SERVICE_HOST": "127.0.0.1", "SUMMIT_SERVICE_PORT": "{live_port}", "SUMMIT_PORT": "tcp://{dead}"},
    ],
    ids=["explicit-before-seed", "seed-before-kubernetes", "host-and-port-before-tcp"],
)
def test_first_found_wins(
    summit: Service, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    """The earlier form points at the live service, the later one at a closed port."""
    dead = f"127.0.0.1:{free_port()}"
    for variable, template in variables.items():
        monkeypatch.setenv(
            variable, template.format(live=summit.address, live_port=summit.port, dead=dead)
        )
    echo_through(make_caller(production=True))


def test_no_address_names_every_variable_tried() -> None:
    app = make_caller(production=True)
    with app.app_context(), pytest.raises(PeerNotFound) as caught:
        gnar.peer("user-service")
    message = str(caught.value)
    assert isinstance(caught.value, GnarError)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)
    assert isinstance(caught.value, LookupError)
    assert caught.value.key == "GNAR_PEER_USER_SERVICE_URL"
    assert message.startswith("GNAR_PEER_USER_SERVICE_URL: no address for the peer service ")
    for variable in (
        "GNAR_PEER_USER_SERVICE_URL",
        "USER_SERVICE_SERVICE_PORT",
        "USER_SERVICE_SERVICE_HOST",
        "USER_SERVICE_PORT",
    ):
        assert variable in message
    assert "'user-service'" in message


def test_no_address_in_development_names_the_prefixed_seed_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_APP_PISTE_SERVICE_PORT", "9401")
    app = make_caller(env_prefix="MY_APP")
    with app.app_context(), pytest.raises(PeerNotFound) as caught:
        gnar.peer("piste")
    assert "MY_APP_PEER_PISTE_URL" in str(caught.value)
    assert "MY_APP_PISTE_SERVICE_PORT holds only a port (9401)" in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GNAR_PISTE_SERVICE_PORT", "piste"),
        ("GNAR_PEER_PISTE_URL", "ftp://127.0.0.1:21"),
        ("PISTE_SERVICE_PORT", "http"),
    ],
)
def test_malformed_address_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("PISTE_SERVICE_HOST", "10.0.0.7")
    app = make_caller()
    with app.app_context(), pytest.raises(ConfigError) as caught:
        gnar.peer("piste")
    assert caught.value.key == variable
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"GNAR_PEER_PISTE_URL": "http://127.0.0.1:99999"}, "GNAR_PEER_PISTE_URL"),
        ({"GNAR_PEER_PISTE_URL": "http://[::1]:0/api"}, "GNAR_PEER_PISTE_URL"),
        ({"GNAR_PISTE_SERVICE_PORT": "127.0.0.1:65536"}, "GNAR_PISTE_SERVICE_PORT"),
        ({"PISTE_SERVICE_HOST": "10.0.0.7", "PISTE_SERVICE_PORT": "70000"}, "PISTE_SERVICE_PORT"),
        ({"PISTE_PORT": "tcp://10.0.0.7:99999"}, "PISTE_PORT"),
    ],
    ids=["explicit-url", "explicit-url-port-0", "seed", "kubernetes", "docker-link"],
)
def test_a_port_past_65535_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    """Not requests' InvalidURL at call time, which names no variable."""
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    app = make_caller()
    with app.app_context(), pytest.raises(ConfigError) as caught:
        gnar.peer("piste")
    assert caught.value.key == named
    assert "expected a port number from 1 to 65535" in str(caught.value)


def test_a_peers_option_with_a_bad_port_stops_start_up() -> None:
    app = Flask(__name__)
    with pytest.raises(ConfigError) as caught:
        GnarPeer(app, peers={"piste": "http://127.0.0.1:123456"})
    assert caught.value.key == "peers['piste']"
    assert "expected a port number from 1 to 65535, got 123456" in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("PEER_TIMEOUT_SECONDS", "soon"), ("PEER_RETRIES", "-1"), ("EXTERNAL_TIMEOUT_SECONDS", "0")],
)
def test_bad_settings_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(f"GNAR_{setting}", value)
    with pytest.raises(ConfigError, match=f"GNAR_{setting}"):
        make_caller()


def test_without_the_extension_gnar_peer_names_it() -> None:
    app = Flask(__name__)
    GnarErrors(app)
    with app.app_context(), pytest.raises(NotInitialisedError, match="GnarPeer"):
        gnar.peer("summit")


# --- the seed's methods ---------------------------------------------------------------


def test_every_method_with_the_seed_signatures(summit: Service) -> None:
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url)
    with app.app_context():
        peer = gnar.peer("summit")
        calls = {
            "POST": peer.post("echo", {"email": "ic3b3rg@gmail.com"}),
            "PUT": peer.put("echo", "put-body"),
            "PATCH": peer.patch("/echo", "patch-body"),
            "DELETE": peer.delete("/echo"),
            "OPTIONS": peer.request("OPTIONS", "/echo"),
        }
        json_post = peer.post("/echo", json={"lift": "gondola"})
        head = peer.head("/echo")
    bodies = {method: response.json() for method, response in calls.items() if method != "OPTIONS"}
    assert bodies["POST"]["body"] == "email=ic3b3rg%40gmail.com"
    assert bodies["PUT"]["body"] == "put-body"
    assert bodies["PATCH"]["body"] == "patch-body"
    assert bodies["DELETE"]["method"] == "DELETE"
    assert "POST" in calls["OPTIONS"].headers["Allow"]
    assert json.loads(json_post.json()["body"]) == {"lift": "gondola"}
    assert head.status_code == 200 and head.content == b""
    assert isinstance(head, requests.Response)


def test_peer_request_signal_after_every_call(summit: Service) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url, GNAR_PEER_DEAD_URL=dead)
    seen: list[dict[str, Any]] = []

    def record(sender: Flask, **kwargs: Any) -> None:
        seen.append({"sender": sender, **kwargs})

    with signals.peer_request.connected_to(record, sender=app), app.app_context():
        gnar.peer("summit").get("/hits/signal")
        with pytest.raises(PeerUnavailable):
            gnar.peer("dead").post("/x")
    assert [(s["service"], s["method"], s["url"], s["status"]) for s in seen] == [
        ("summit", "GET", summit.url + "/hits/signal", 200),
        ("dead", "POST", dead + "/x", None),
    ]
    assert all(s["sender"] is app and s["elapsed"] > 0 for s in seen)


# --- auto_auth ------------------------------------------------------------------------


def token_for(app: Flask, identity: str) -> dict[str, str]:
    with app.app_context():
        return {"Authorization": f"Bearer {create_access_token(identity=identity)}"}


def test_auto_auth_forwards_a_token_the_peer_accepts(summit: Service) -> None:
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url)
    answer = app.test_client().get(
        "/relay/summit/whoami?auth=1", headers=token_for(app, "ic3b3rg")
    )
    assert answer.json == {"status": 200, "body": {"identity": "ic3b3rg"}}


def test_without_auto_auth_or_a_verified_token_no_header_is_sent(summit: Service) -> None:
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url)
    client = app.test_client()
    not_asked = client.get("/relay/summit/whoami", headers=token_for(app, "ic3b3rg"))
    no_token = client.get("/relay/summit/whoami?auth=1")
    assert not_asked.json["status"] == 401
    assert no_token.json["status"] == 401
    with app.app_context():
        outside_a_request = gnar.peer("summit").get("/whoami", auto_auth=True)
    assert outside_a_request.status_code == 401


# --- request ids ----------------------------------------------------------------------


def test_the_incoming_request_id_reaches_the_peer_and_comes_back(summit: Service) -> None:
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url)
    answer = app.test_client().get("/relay/summit/echo", headers={"X-Request-ID": "trace-42"})
    assert answer.json["body"]["request_id"] == "trace-42"
    assert answer.headers["X-Request-ID"] == "trace-42"


@pytest.mark.parametrize("incoming", [None, "no spaces allowed", "x" * 201])
def test_a_missing_or_malformed_request_id_is_replaced(
    summit: Service, incoming: str | None
) -> None:
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url)
    headers = {"X-Request-ID": incoming} if incoming else {}
    answer = app.test_client().get("/relay/summit/echo", headers=headers)
    made = answer.headers["X-Request-ID"]
    assert made and made != incoming
    assert answer.json["body"]["request_id"] == made


def test_calls_outside_a_request_get_their_own_id(summit: Service) -> None:
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url)
    with app.app_context():
        ids = {echo_through(app)["request_id"] for _ in range(2)}
    assert len(ids) == 2 and None not in ids


def test_request_id_across_two_bjoern_services_and_in_the_logs(summit: Service) -> None:
    with summit_service(GNAR_PEER_SUMMIT_URL=summit.url, GNAR_LOG_JSON="1") as caller:
        answer = requests.get(
            f"{caller.url}/relay/summit/echo", headers={"X-Request-ID": "ride-7"}, timeout=10
        )
        direct = requests.get(f"{caller.url}/echo", headers={"X-Request-ID": "log-me-9"}, timeout=10)
        log_lines = caller.output().splitlines()
    assert answer.json()["body"]["request_id"] == "ride-7"
    assert answer.headers["X-Request-ID"] == "ride-7"
    assert direct.headers["X-Request-ID"] == "log-me-9"
    records = [json.loads(line) for line in log_lines if line.startswith("{")]
    assert {"message": "echo GET", "request_id": "log-me-9"}.items() <= next(
        record for record in records if record["message"] == "echo GET"
    ).items()


# --- failures, timeouts and retries ---------------------------------------------------


def test_get_is_retried_on_503_post_is_not(summit: Service) -> None:
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url)
    get_key, post_key = uuid.uuid4().hex, uuid.uuid4().hex
    with app.app_context():
        peer = gnar.peer("summit")
        got = peer.get(f"/flaky/{get_key}")
        posted = peer.post(f"/flaky/{post_key}")
        hits = [peer.get(f"/hits/{key}").json()["hits"] for key in (get_key, post_key)]
    assert (got.status_code, posted.status_code) == (200, 503)
    assert hits == [2, 1]


def test_no_retries_when_disabled(summit: Service) -> None:
    app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url, GNAR_PEER_RETRIES=0)
    key = uuid.uuid4().hex
    with app.app_context():
        assert gnar.peer("summit").get(f"/flaky/{key}").status_code == 503
        assert gnar.peer("summit").get(f"/hits/{key}").json() == {"hits": 1}


@pytest.mark.parametrize(("method", "attempts"), [("GET", 3), ("DELETE", 3), ("POST", 1), ("PATCH", 1)])
def test_dropped_connections_are_retried_for_idempotent_methods_only(
    method: str, attempts: int
) -> None:
    with RawListener(hang=False) as listener:
        app = make_caller(GNAR_PEER_FLAKY_URL=f"http://{listener.address}", GNAR_PEER_RETRIES=2)
        with app.app_context(), pytest.raises(PeerUnavailable) as caught:
            gnar.peer("flaky").request(method, "/anything")
        assert listener.accepted == attempts
    assert caught.value.code == 502
    assert not isinstance(caught.value, PeerTimeout)


@pytest.mark.parametrize(("method", "retries"), [("GET", 2), ("PUT", 2), ("POST", 0), ("PATCH", 0)])
def test_a_refused_connection_names_service_url_and_timeout(
    caplog: pytest.LogCaptureFixture, method: str, retries: int
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    app = make_caller(GNAR_PEER_PISTE_URL=url, GNAR_PEER_TIMEOUT_SECONDS=3, GNAR_PEER_RETRIES=2)
    with app.app_context(), pytest.raises(PeerUnavailable) as caught:
        gnar.peer("piste").request(method, "/runs")
    retried = [r for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert len(retried) == retries
    error = caught.value
    assert (error.code, error.service, error.url) == (502, "piste", url + "/runs")
    assert "'piste'" in str(error) and url + "/runs" in str(error)
    assert "Connection refused" in str(error) and "timeout 3.0s" in str(error)


def test_a_peer_that_never_answers_times_out_once() -> None:
    with RawListener(hang=True) as listener:
        app = make_caller(
            GNAR_PEER_SILENT_URL=f"http://{listener.address}", GNAR_PEER_TIMEOUT_SECONDS=0.3
        )
        with app.app_context(), pytest.raises(PeerTimeout) as caught:
            gnar.peer("silent").get("/anything")
        assert listener.accepted == 1
    assert caught.value.code == 504
    assert "'silent'" in str(caught.value) and "timeout 0.3s" in str(caught.value)


def test_uncaught_peer_failures_answer_502_and_504_json() -> None:
    with RawListener(hang=True) as listener:
        app = make_caller(
            GNAR_PEER_SILENT_URL=f"http://{listener.address}",
            GNAR_PEER_DOWN_URL=f"http://127.0.0.1:{free_port()}",
            GNAR_PEER_TIMEOUT_SECONDS=0.3,
        )
        client = app.test_client()
        down = client.get("/relay/down/runs")
        silent = client.get("/relay/silent/runs")
    assert down.status_code == 502 and "'down'" in down.json["error"]
    assert silent.status_code == 504 and "'silent'" in silent.json["error"]


# --- pooled connections ---------------------------------------------------------------


def test_calls_reuse_one_connection_per_thread(summit: Service) -> None:
    with CountingProxy(summit.port) as proxy:
        for _ in range(5):
            requests.get(f"http://{proxy.address}/hits/seed", timeout=5)
        seed_connections = proxy.accepted
        app = make_caller(GNAR_PEER_SUMMIT_URL=f"http://{proxy.address}")
        with app.app_context():
            statuses = [gnar.peer("summit").get("/hits/pooled").status_code for _ in range(20)]
        pooled_connections = proxy.accepted - seed_connections

        def four_calls() -> None:
            with app.app_context():
                for _ in range(4):
                    assert gnar.peer("summit").get("/hits/threads").status_code == 200

        threads = [threading.Thread(target=four_calls) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        threaded_connections = proxy.accepted - seed_connections - pooled_connections
    assert seed_connections == 5
    assert statuses == [200] * 20 and pooled_connections == 1
    assert threaded_connections == 3


def test_peer_calls_skip_proxy_variables_and_external_calls_honour_them(
    summit: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY points at a forwarder to the service: only external calls go through it."""
    with CountingProxy(summit.port) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://{proxy.address}")
        monkeypatch.setenv("NO_PROXY", "")
        app = make_caller(GNAR_PEER_SUMMIT_URL=summit.url)
        with app.app_context():
            assert gnar.peer("summit").get("/hits/direct").status_code == 200
            assert proxy.accepted == 0
            assert gnar.external.get(f"{summit.url}/hits/proxied").status_code == 200
            assert proxy.accepted == 1


def test_stopping_the_app_closes_pooled_connections(summit: Service) -> None:
    with CountingProxy(summit.port) as proxy:
        app = make_caller(GNAR_PEER_SUMMIT_URL=f"http://{proxy.address}")
        state = app.extensions["gnar"]
        state.start()
        with app.app_context():
            gnar.peer("summit").get("/hits/stop")
            gnar.peer("summit").get("/hits/stop")
            state.stop()
            gnar.peer("summit").get("/hits/stop")
        assert proxy.accepted == 2


def test_peer_configured_signal() -> None:
    seen: list[dict[str, Any]] = []
    with signals.peer_configured.connected_to(lambda sender, **kw: seen.append(kw)):
        make_caller(GNAR_PEER_TIMEOUT_SECONDS="2.5", GNAR_PEER_RETRIES="4")
    assert seen == [{"timeout": 2.5, "retries": 4}]


def test_auto_auth_keeps_a_non_string_identity_and_custom_claims(monkeypatch):
    """With GnarJWT, the forwarded token decodes to the same int identity and claims."""
    from flask import jsonify
    from flask_jwt_extended import create_access_token, decode_token, jwt_required

    from flask_gnar import create_app, current_identity
    from flask_gnar.peer import bearer_for_current_identity

    monkeypatch.setenv("GNAR_JWT_SECRET_KEY", "s" * 48)
    application = create_app("snowy", no_db=True)

    @application.get("/forward")
    @jwt_required()
    def forward():
        token = bearer_for_current_identity().removeprefix("Bearer ")
        return jsonify({"mine": current_identity(), "forwarded": decode_token(token)})

    with application.app_context():
        token = create_access_token(identity=42, additional_claims={"role": "patroller"})
    answer = application.test_client().get("/forward", headers={"Authorization": f"Bearer {token}"}).json
    assert answer["mine"] == 42
    with application.test_request_context():
        from flask_gnar.auth import identity_from_claims

        assert identity_from_claims(answer["forwarded"]) == 42
    assert answer["forwarded"]["role"] == "patroller"
