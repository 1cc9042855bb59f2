"""gnar.external: requests' functions for any URL with the app's pool, timeout and retries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, jsonify
from helpers import free_port
from peer_support import CountingProxy, RawListener, Service, summit_service

from flask_gnar import PeerTimeout, PeerUnavailable, create_app, gnar, signals


@pytest.fixture(scope="module")
def summit() -> Iterator[Service]:
    with summit_service() as service:
        yield service


def make_app(**config: Any) -> Flask:
    app = create_app(
        "snowy", port=free_port(), no_db=True, no_jwt=True,
        config={"TESTING": True, "GNAR_PEER_BACKOFF_SECONDS": 0, **config},
    )

    @app.get("/outbound")
    def outbound() -> Any:
        answer = gnar.external.get(app.config["TARGET"] + "/echo")
        return jsonify(answer.json())

    return app


def test_seed_style_calls_on_any_url(summit: Service) -> None:
    app = make_app()
    with app.app_context():
        got = gnar.external.get(f"{summit.url}/echo", {"lift": "t-bar"})
        posted = gnar.external.post(f"{summit.url}/echo", json={"run": "blue"})
        deleted = gnar.external.delete(f"{summit.url}/echo")
    assert got.json()["args"] == {"lift": "t-bar"}
    assert posted.json()["body"] == '{"run": "blue"}'
    assert deleted.json()["method"] == "DELETE"


def test_no_request_id_and_no_auto_auth_leave_the_cluster(summit: Service) -> None:
    app = make_app(TARGET=summit.url)
    answer = app.test_client().get("/outbound", headers={"X-Request-ID": "internal-1"})
    assert answer.json["request_id"] is None
    with app.app_context(), pytest.raises(TypeError, match="auto_auth"):
        gnar.external.get(f"{summit.url}/echo", auto_auth=True)


def test_cookies_set_by_one_call_are_not_sent_on_the_next(summit: Service) -> None:
    app = make_app(GNAR_PEER_SUMMIT_URL=summit.url)
    with app.app_context():
        assert gnar.external.get(f"{summit.url}/cookie").cookies["session"] == "user-a"
        assert gnar.external.get(f"{summit.url}/echo").json()["cookie"] is None
        assert gnar.peer("summit").get("/echo").json()["cookie"] is None


def test_external_timeout_is_its_own_setting() -> None:
    with RawListener(hang=True) as listener:
        app = make_app(GNAR_EXTERNAL_TIMEOUT_SECONDS=0.3)
        url = f"http://{listener.address}/range/5ce7d"
        with app.app_context(), pytest.raises(PeerTimeout) as caught:
            gnar.external.get(url)
    assert caught.value.service is None and caught.value.url == url
    assert url in str(caught.value) and "timeout 0.3s" in str(caught.value)


def test_a_timeout_argument_wins_over_the_default() -> None:
    with RawListener(hang=True) as listener:
        app = make_app()
        with app.app_context(), pytest.raises(PeerTimeout, match="timeout 0.2s"):
            gnar.external.get(f"http://{listener.address}/", timeout=0.2)


def test_get_is_retried_on_503(summit: Service) -> None:
    app = make_app()
    key = uuid.uuid4().hex
    with app.app_context():
        assert gnar.external.get(f"{summit.url}/flaky/{key}").status_code == 200
        assert gnar.external.get(f"{summit.url}/hits/{key}").json() == {"hits": 2}


def test_refused_external_call_is_signalled_without_a_service() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    app = make_app()
    seen: list[dict[str, Any]] = []
    with signals.peer_request.connected_to(lambda sender, **kw: seen.append(kw), sender=app):
        with app.app_context(), pytest.raises(PeerUnavailable, match="Connection refused"):
            gnar.external.post(url, data="x")
    assert [(s["service"], s["method"], s["url"], s["status"]) for s in seen] == [
        (None, "POST", url, None)
    ]


def test_external_calls_reuse_pooled_connections(summit: Service) -> None:
    with CountingProxy(summit.port) as proxy:
        app = make_app()
        with app.app_context():
            for _ in range(10):
                assert gnar.external.get(f"http://{proxy.address}/hits/x").status_code == 200
        assert proxy.accepted == 1
