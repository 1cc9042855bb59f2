"""CORS as a browser enforces it: Debian's headless Chromium calls a service on another origin.

The page is served from ``http://127.0.0.1:<port A>``; the ``gondola`` service runs
on ``http://127.0.0.1:<port B>`` under ``serve()`` (bjoern in production, the
development server otherwise). Every call goes through the page's own ``fetch``,
so Chromium sends the preflight and decides what the page may read.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from auth_support import SECRET
from browser_support import Chromium, PageServer
from helpers import free_port, start_module, stop, wait_for_http

#: The browser app: ``call`` answers what the page can see of a response, or the error.
PAGE = """<!doctype html>
<title>lift map</title>
<script>
async function call(url, method, token, body) {
  const headers = {"Content-Type": "application/json"};
  if (token) headers["Authorization"] = "Bearer " + token;
  try {
    const response = await fetch(url, {method, headers, body: JSON.stringify(body)});
    return {
      status: response.status,
      body: await response.json(),
      authorization: response.headers.get("Authorization"),
    };
  } catch (error) {
    return {error: String(error)};
  }
}
</script>
"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    with Chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    with PageServer(PAGE) as server:
        yield server


@pytest.fixture(scope="module")
def stranger_page_server() -> Iterator[PageServer]:
    """The same page on an origin the production service does not allow."""
    with PageServer(PAGE) as server:
        yield server


def run_gondola(**env: str) -> tuple[str, subprocess.Popen[str]]:
    port = free_port()
    process = start_module("gondola.app.main", str(port), GNAR_JWT_SECRET_KEY=SECRET, **env)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/cabins/login", process=process)
    return base, process


@pytest.fixture(scope="module")
def production_service(page_server: PageServer, clean_module_env: None) -> Iterator[str]:
    """gondola on bjoern, allowing the page's origin only."""
    base, process = run_gondola(GONDOLA_PRODUCTION="1", GNAR_CORS_ORIGINS=page_server.origin)
    yield base
    stop(process)


@pytest.fixture(scope="module")
def development_service(clean_module_env: None) -> Iterator[str]:
    """gondola on the development server, which allows every origin."""
    base, process = run_gondola()
    yield base
    stop(process)


class BrowserApp:
    """The page opened in Chromium, calling one service."""

    def __init__(self, chromium: Chromium, page: PageServer, service: str, production: bool) -> None:
        self.page = chromium.page
        self.service = service
        self.production = production
        self.page.open(f"{page.origin}/")

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        arguments = ", ".join(json.dumps(a) for a in (self.service + path, method, token, body or {}))
        return self.page.evaluate(f"call({arguments})")

    def log_in(self, rider: str) -> str:
        answer = self.call("POST", "/cabins/login", body={"rider": rider})
        assert answer["status"] == 200, answer
        return str(answer["body"]["access_token"])


def bearer_token(answer: dict[str, Any]) -> str:
    """The refreshed token the page read from the response's Authorization header."""
    header = answer["authorization"]
    assert header and header.startswith("Bearer "), answer
    return str(header.removeprefix("Bearer "))


def assert_patch_round_trip(app: BrowserApp) -> None:
    token = app.log_in("rider-7")
    answer = app.call("PATCH", "/cabins/3", token, {"seats": 6, "heated": True})
    assert answer["status"] == 200, answer
    [preflight] = app.page.preflights(f"{app.service}/cabins/3")
    assert preflight["status"] == 200
    assert "PATCH" in preflight["headers"]["access-control-allow-methods"]
    assert "authorization" in preflight["headers"]["access-control-allow-headers"].lower()
    assert answer["body"] == {"cabin": 3, "rider": "rider-7", "changes": {"seats": 6, "heated": True}}
    refreshed = bearer_token(answer)
    # the page carries on with the token it read, as a browser app does
    again = app.call("PATCH", "/cabins/4", refreshed, {"seats": 4})
    assert again["status"] == 200 and again["body"]["rider"] == "rider-7", again


def assert_errors_reach_the_page(app: BrowserApp) -> None:
    token = app.log_in("rider-8")

    unauthenticated = app.call("PATCH", "/cabins/3", None, {"seats": 1})
    assert unauthenticated["status"] == 401, unauthenticated
    assert "error" in unauthenticated["body"]

    crashed = app.call("PATCH", "/cabins/jammed", token, {"seats": 1})
    assert crashed["status"] == 500, crashed
    assert ("traceback" in crashed["body"]) is not app.production
    if app.production:
        assert crashed["body"] == {"error": "Internal Server Error"}

    nowhere = app.call("PATCH", "/no/such/route", token, {"seats": 1})
    assert nowhere["status"] == 404, nowhere

    refused = app.call("PATCH", "/cabins/login", token, {"seats": 1})
    assert refused["status"] == 405, refused


@pytest.fixture(params=["production", "development"])
def browser_app(
    request: pytest.FixtureRequest, chromium: Chromium, page_server: PageServer,
    stranger_page_server: PageServer,
) -> BrowserApp:
    """The page calling the production service from its allowed origin, or the development
    service from any origin."""
    if request.param == "production":
        return BrowserApp(chromium, page_server, request.getfixturevalue("production_service"), True)
    return BrowserApp(
        chromium, stranger_page_server, request.getfixturevalue("development_service"), False
    )


def test_the_page_patches_with_a_token_and_reads_the_refreshed_one(browser_app: BrowserApp) -> None:
    assert_patch_round_trip(browser_app)


def test_error_answers_reach_the_page_with_their_status(browser_app: BrowserApp) -> None:
    assert_errors_reach_the_page(browser_app)


def test_production_blocks_a_page_from_an_origin_outside_the_allow_list(
    chromium: Chromium, stranger_page_server: PageServer, production_service: str
) -> None:
    app = BrowserApp(chromium, stranger_page_server, production_service, True)
    for method, path in (("POST", "/cabins/login"), ("PATCH", "/cabins/3")):
        answer = app.call(method, path, "not-a-token", {"seats": 1})
        assert answer == {"error": "TypeError: Failed to fetch"}
    blocked = [m for m in app.page.console_messages() if "blocked by CORS policy" in m]
    assert len(blocked) == 2, app.page.console_messages()
    assert all(stranger_page_server.origin in message for message in blocked)
