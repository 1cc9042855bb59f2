"""Bad input against a production bjoern service: proper statuses, JSON errors, no tracebacks."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests
from flask import Flask

from flask_gnar import GnarErrors
from auth_support import alg_none, forged
from hardening_support import Hardy, access_token, refresh_token, start_hardy

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def hardy() -> Iterator[Hardy]:
    service = start_hardy(GNAR_MAX_CONTENT_LENGTH=str(LIMIT))
    yield service
    service.stop()


def assert_json_error(response: requests.Response, status: int) -> str:
    """The answer is ``{"error": ...}`` with ``status`` and nothing of the server's insides."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and body["error"], body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return str(body["error"])


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes on a new connection; everything the server answered before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            return b""
    return answer


def same_worker_serves(hardy: Hardy, pid: int) -> None:
    response = requests.get(f"{hardy.url}/pid", timeout=5)
    assert response.json() == {"pid": pid}
    assert hardy.process.poll() is None


@pytest.fixture
def worker(hardy: Hardy) -> int:
    pid: int = requests.get(f"{hardy.url}/pid", timeout=5).json()["pid"]
    return pid


# --- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"a": }', b"\xff\xfe\x00", b'{"a": 1}}'])
def test_malformed_json_answers_400_json(hardy: Hardy, worker: int, body: bytes) -> None:
    response = requests.post(
        f"{hardy.url}/echo", data=body, headers={"Content-Type": "application/json"}, timeout=5
    )
    assert assert_json_error(response, 400) == "The request body is not valid JSON."
    same_worker_serves(hardy, worker)


def test_a_json_route_given_another_content_type_answers_415_json(hardy: Hardy) -> None:
    response = requests.post(
        f"{hardy.url}/echo", data=b'{"a": 1}', headers={"Content-Type": "text/plain"}, timeout=5
    )
    assert_json_error(response, 415)


def test_a_body_over_the_limit_answers_413_json_and_one_under_it_is_served(
    hardy: Hardy, worker: int
) -> None:
    payload = {"snow": "x" * (LIMIT - 100)}
    assert requests.post(f"{hardy.url}/echo", json=payload, timeout=5).json() == {"echo": payload}
    response = requests.post(f"{hardy.url}/echo", json={"snow": "x" * (4 * LIMIT)}, timeout=5)
    assert_json_error(response, 413)
    same_worker_serves(hardy, worker)


def test_the_limit_setting_leaves_flasks_own_setting_alone() -> None:
    limited, own = Flask("limited"), Flask("own")
    own.config["MAX_CONTENT_LENGTH"] = 10
    for app in (limited, own):
        app.config["GNAR_MAX_CONTENT_LENGTH"] = 1000
        GnarErrors(app)
    assert (limited.config["MAX_CONTENT_LENGTH"], own.config["MAX_CONTENT_LENGTH"]) == (1000, 10)


# --- methods and headers ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH", "PROPFIND"])
def test_a_method_the_route_does_not_take_answers_405_json_with_allow(
    hardy: Hardy, method: str
) -> None:
    response = requests.request(method, f"{hardy.url}/echo", timeout=5)
    assert_json_error(response, 405)
    assert set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


def test_a_method_http_does_not_know_is_refused_and_the_worker_carries_on(
    hardy: Hardy, worker: int
) -> None:
    """bjoern's parser answers a bare 400 before Flask sees the request."""
    answer = raw_exchange(hardy.port, b"BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    same_worker_serves(hardy, worker)


def test_garbage_instead_of_http_is_refused_and_the_worker_carries_on(
    hardy: Hardy, worker: int
) -> None:
    assert raw_exchange(hardy.port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(
        b"HTTP/1.1 400 "
    )
    same_worker_serves(hardy, worker)


def test_64_kib_of_headers_are_served(hardy: Hardy, worker: int) -> None:
    headers = {f"X-Powder-{index}": "p" * 1000 for index in range(64)}
    response = requests.get(f"{hardy.url}/pid", headers=headers, timeout=5)
    assert response.json() == {"pid": worker}


def test_a_megabyte_of_headers_is_cut_off_and_the_worker_carries_on(
    hardy: Hardy, worker: int
) -> None:
    """bjoern drops the connection (no answer, or a bare 4xx); it never crashes."""
    request = b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    answer = raw_exchange(hardy.port, request)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    same_worker_serves(hardy, worker)


def test_an_error_in_a_view_answers_500_without_a_traceback(hardy: Hardy) -> None:
    response = requests.get(f"{hardy.url}/crash", timeout=5)
    assert assert_json_error(response, 500) == "Internal Server Error"
    assert "the view failed" not in response.text


# --- tokens ---------------------------------------------------------------------------------


BAD_TOKENS = {
    "forged": (lambda: forged(access_token()), 401, "Signature verification failed"),
    "expired": (lambda: access_token(expires_delta=timedelta(seconds=-1)), 401, "Token has expired"),
    "alg-none": (lambda: alg_none(access_token()), 401, "The specified alg value is not allowed"),
    "refresh-token": (refresh_token, 422, "Only non-refresh tokens are allowed"),
    "truncated": (lambda: access_token()[:25], 422, "Not enough segments"),
    "truncated-signature": (lambda: access_token()[:-6], 422, "Invalid crypto padding"),
    "another-secret": (
        lambda: access_token(secret="another-secret-another-secret-another-secret"),
        401,
        "Signature verification failed",
    ),
    "missing": (lambda: "", 401, "Missing Authorization Header"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_answer_json_errors_from_bjoern(hardy: Hardy, case: str) -> None:
    make_token, status, error = BAD_TOKENS[case]
    token = make_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(f"{hardy.url}/protected", headers=headers, timeout=5)
    assert assert_json_error(response, status) == error
    assert "Authorization" not in response.headers


def test_a_good_token_is_served_and_slides(hardy: Hardy) -> None:
    response = requests.get(
        f"{hardy.url}/protected", headers={"Authorization": f"Bearer {access_token(7)}"}, timeout=5
    )
    assert response.json() == {"identity": 7}
    assert response.headers["Authorization"].startswith("Bearer ")
