"""GnarMetrics: a real Prometheus scraping a 2-worker bjoern service, promtool, settings."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flask_gnar import ConfigError, GnarMetrics, create_app, get_state, signals

from aws_support import aws  # noqa: F401 (fixture)
from helpers import free_port, start_module, stop, wait_for_http, wait_until
from prometheus_support import prometheus_scraping

USER_ROUTE = "/user/<int:user_id>"
ROUTES = {USER_ROUTE, "/echo", "/peer/<name>", "/send", "/health/live", "/health/ready", "none"}


# --- helpers --------------------------------------------------------------------------


class Tally:
    """The ``tally`` test service (tests/packages/tally) under serve() with bjoern workers."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.env = env
        self.metrics_path = env.get("GNAR_METRICS_PATH", "/metrics")
        self.process = start_module("tally.app.main", str(self.port), **env)
        wait_for_http(self.url(self.metrics_path), process=self.process)
        wait_until(lambda: len(self.workers()) == int(env.get("TALLY_WORKERS", "2")),
                   what="the workers")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"

    def workers(self) -> set[int]:
        """The supervisor's live children (read from /proc: no request is sent)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def get(self, path: str) -> requests.Response:
        """One request on a new connection: the kernel spreads them over the workers."""
        return requests.get(self.url(path), timeout=10, headers={"Connection": "close"})

    def scrape(self) -> str:
        answer = self.get(self.metrics_path)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return answer.text


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """``{sorted labels: value}`` of the samples called ``name`` in a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def request_totals(text: str) -> dict[tuple[str, str, str], float]:
    return {
        (dict(labels)["method"], dict(labels)["route"], dict(labels)["status"]): value
        for labels, value in samples(text, "gnar_http_requests_total").items()
    }


def send_mixed_requests(tally: Tally, users: int) -> tuple[Counter[tuple[str, str, str]], set[int]]:
    """Requests of several routes, statuses and methods; what a test expects to be counted."""
    sent: Counter[tuple[str, str, str]] = Counter()
    pids = set()
    for user_id in range(users):
        answer = tally.get(f"/user/{user_id}")
        assert answer.status_code == 200
        pids.add(answer.json()["pid"])
        sent["GET", USER_ROUTE, "200"] += 1
    for _ in range(4):
        answer = requests.post(tally.url("/echo"), json={"n": 1}, timeout=10,
                               headers={"Connection": "close"})
        assert answer.status_code == 200
        sent["POST", "/echo", "200"] += 1
    for _ in range(6):  # random URLs: one label value however many there are
        assert tally.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}").status_code == 404
        sent["GET", "none", "404"] += 1
    assert requests.request("PROPFIND", tally.url("/echo"), timeout=10).status_code == 405
    sent["OTHER", "none", "405"] += 1
    assert requests.delete(tally.url(f"/user/1"), timeout=10).status_code == 405
    sent["DELETE", "none", "405"] += 1
    return sent, pids


@pytest.fixture
def upstream() -> Iterator[str]:
    """A plain HTTP server for the peer calls; answers 200, or 503 on /down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- a real Prometheus against two workers --------------------------------------------


def test_prometheus_stores_exactly_the_requests_sent_to_two_workers(tmp_path: Path) -> None:
    tally = Tally(TALLY_WORKERS="2", GNAR_METRICS_DIR=str(tmp_path))
    try:
        with prometheus_scraping(tally.address, "/metrics", tmp_path) as prometheus:
            sent, pids = send_mixed_requests(tally, users=40)
            assert len(pids) == 2, "both workers answered"
            for (method, route, status), count in sent.items():
                prometheus.wait_for_value(
                    f'sum(gnar_http_requests_total{{method="{method}",route="{route}",'
                    f'status="{status}"}})', count,
                )
            prometheus.wait_for_value(
                f'sum(gnar_http_request_duration_seconds_count{{route="{USER_ROUTE}"}})', 40
            )
            prometheus.wait_for_value("sum(gnar_http_requests_total)", sum(sent.values()))
            prometheus.wait_for_value("gnar_workers", 2)
            prometheus.wait_for_value('gnar_build_info{service="tally"}', 1)
            stored_routes = {
                series["metric"]["route"]
                for series in prometheus.query("gnar_http_requests_total")
            }
            assert stored_routes <= ROUTES, "random URLs add no label values"
        scrapes = [tally.scrape() for _ in range(12)]
        assert all(request_totals(scrape) == {k: float(v) for k, v in sent.items()}
                   for scrape in scrapes), "every scrape, whichever worker answers, shows all"
    finally:
        output = stop(tally.process)
    assert "Traceback" not in output, output


def test_promtool_accepts_a_scrape(tmp_path: Path) -> None:
    tally = Tally(TALLY_WORKERS="2", GNAR_METRICS_DIR=str(tmp_path))
    try:
        send_mixed_requests(tally, users=4)
        scrape = tally.scrape()
    finally:
        stop(tally.process)
    checked = subprocess.run(["promtool", "check", "metrics"], input=scrape, text=True,
                             capture_output=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
    assert "gnar_http_request_duration_seconds_bucket" in scrape


def test_a_killed_and_replaced_worker_loses_no_counts(tmp_path: Path) -> None:
    tally = Tally(TALLY_WORKERS="2", GNAR_METRICS_DIR=str(tmp_path))
    series = f'sum(gnar_http_requests_total{{route="{USER_ROUTE}"}})'
    try:
        with prometheus_scraping(tally.address, "/metrics", tmp_path) as prometheus:
            _, pids = send_mixed_requests(tally, users=30)
            assert len(pids) == 2
            prometheus.wait_for_value(series, 30)
            victim = sorted(pids)[0]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: victim not in tally.workers() and len(tally.workers()) == 2,
                       what="a replacement worker")
            wait_for_http(tally.url("/health/ready"), process=tally.process)
            _, later_pids = send_mixed_requests(tally, users=30)
            assert victim not in later_pids and len(later_pids) == 2
            prometheus.wait_for_value(series, 60)
            prometheus.wait_for_value("gnar_workers", 2)  # the dead worker's gauge is gone
            prometheus.wait_for_value(
                f'sum(resets(gnar_http_requests_total{{route="{USER_ROUTE}"}}[1m]))', 0
            )
    finally:
        output = stop(tally.process)
    assert f"worker {victim} exited (killed by SIGKILL); starting a new one" in output


def test_sqs_messages_and_peer_calls_are_counted_in_every_worker(
    tmp_path: Path, aws: Any, upstream: str  # noqa: F811 (fixture)
) -> None:
    import boto3

    queue = f"tally-{uuid.uuid4().hex[:8]}"
    sqs = boto3.client("sqs")
    sqs.create_queue(QueueName=queue)
    tally = Tally(
        TALLY_WORKERS="2", TALLY_QUEUE=queue, GNAR_METRICS_DIR=str(tmp_path),
        GNAR_PEER_UPSTREAM_URL=upstream, GNAR_PEER_GONE_URL=f"http://127.0.0.1:{free_port()}",
        GNAR_PEER_RETRIES="0",
    )
    try:
        for body in ["one", "two", "three", "fail"]:
            answer = requests.post(tally.url("/send"), data=body, timeout=10)
            assert answer.status_code == 200
        for _ in range(3):
            assert tally.get("/peer/upstream").json() == {"status": 200}
        assert tally.get("/peer/gone").status_code == 502

        def counted() -> dict[tuple[tuple[str, str], ...], float]:
            scrape = tally.scrape()
            found = samples(scrape, "gnar_sqs_messages_total")
            handled = found.get((("outcome", "handled"), ("queue", queue)))
            failed = found.get((("outcome", "failed"), ("queue", queue)), 0)
            return found if handled == 3 and failed >= 1 else {}

        wait_until(counted, what="3 handled and a failed SQS message in the scrape")
        scrape = tally.scrape()
        durations = samples(scrape, "gnar_sqs_message_duration_seconds_count")
        assert durations[(("outcome", "handled"), ("queue", queue))] == 3
        peers = samples(scrape, "gnar_peer_requests_total")
        assert peers == {
            (("service", "upstream"), ("status", "200")): 3,
            (("service", "gone"), ("status", "error")): 1,
        }
    finally:
        stop(tally.process)


# --- settings and the in-process registry ---------------------------------------------


def scrape_of(app: Flask, path: str = "/metrics") -> str:
    answer = app.test_client().get(path)
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


def test_metrics_path_is_configurable_and_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_METRICS_PATH", "/internal/prometheus")
    app = create_app("snowy", no_db=True, no_jwt=True, config={"TESTING": True})
    client = app.test_client()
    assert client.get("/metrics").status_code == 404
    for _ in range(3):
        scrape = scrape_of(app, "/internal/prometheus")
    assert request_totals(scrape) == {("GET", "none", "404"): 1.0}


def test_metrics_off_leaves_no_route_and_no_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GNAR_METRICS", "false")
    app = create_app("snowy", no_db=True, no_jwt=True, config={"TESTING": True})
    assert app.test_client().get("/metrics").status_code == 404
    assert "metrics" not in vars(get_state(app))
    assert all(rule.endpoint != "gnar_metrics" for rule in app.url_map.iter_rules())


@pytest.mark.parametrize(
    ("variable", "value"),
    [("GNAR_METRICS", "maybe"), ("GNAR_METRICS_PATH", "metrics"), ("GNAR_METRICS_DIR", "/no/such/dir")],
)
def test_a_bad_setting_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        create_app("snowy", no_db=True, no_jwt=True)


def test_two_apps_in_one_process_count_apart() -> None:
    first = create_app("snowy", no_db=True, no_jwt=True, config={"TESTING": True})
    second = create_app("snowy", no_db=True, no_jwt=True, config={"TESTING": True})
    first.test_client().get("/a")
    first.test_client().get("/b")
    second.test_client().get("/c")
    assert request_totals(scrape_of(first)) == {("GET", "none", "404"): 2.0}
    assert request_totals(scrape_of(second)) == {("GET", "none", "404"): 1.0}


def test_runtime_signals_still_count_after_garbage_collection() -> None:
    app = create_app("snowy", no_db=True, no_jwt=True, config={"TESTING": True})
    other = create_app("snowy", no_db=True, no_jwt=True, config={"TESTING": True})
    gc.collect()
    signals.peer_request.send(app, service=None, method="GET", url="http://x", status=204,
                              elapsed=0.01)
    signals.sqs_message_failed.send(app, queue_name="jobs", message={}, error=None, elapsed=0.2)
    signals.sqs_message_handled.send(other, queue_name="jobs", message={}, elapsed=0.1)
    scrape = scrape_of(app)
    assert samples(scrape, "gnar_peer_requests_total") == {
        (("service", "external"), ("status", "204")): 1.0
    }
    assert samples(scrape, "gnar_sqs_messages_total") == {
        (("outcome", "failed"), ("queue", "jobs")): 1.0
    }


def test_works_alone_on_a_plain_flask_app() -> None:
    app = Flask("plain")
    GnarMetrics(app, path="/stats")

    @app.get("/item/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    for item_id in range(5):
        app.test_client().get(f"/item/{item_id}")
    scrape = scrape_of(app, "/stats")
    assert request_totals(scrape) == {("GET", "/item/<int:item_id>", "200"): 5.0}
    assert samples(scrape, "gnar_workers") == {(): 1.0}


def test_a_response_started_late_is_counted_with_its_status() -> None:
    """A middleware under GnarMetrics may start the response while the body is read."""
    app = Flask("plain")

    @app.get("/made")
    def made() -> tuple[dict[str, bool], int]:
        return {"made": True}, 201

    flask_wsgi = app.wsgi_app

    def start_when_read(environ: Any, start_response: Any) -> Any:
        started: list[tuple[str, Any]] = []
        body = flask_wsgi(environ, lambda status, headers, exc=None: started.append((status, headers)))

        def read() -> Iterator[bytes]:
            start_response(*started[0])
            yield from body

        return read()

    app.wsgi_app = start_when_read  # type: ignore[method-assign]
    GnarMetrics(app)
    for _ in range(3):
        assert app.test_client().get("/made").status_code == 201
    # the rule is read when the response starts: by then Flask has forgotten the request
    assert request_totals(scrape_of(app)) == {("GET", "none", "201"): 3.0}


def app_with_a_slope() -> Flask:
    app = create_app("snowy", no_db=True, no_jwt=True, config={"TESTING": True})

    @app.get("/slope")
    def slope() -> dict[str, str]:
        return {"slope": "black"}

    return app


def test_serve_uses_the_metrics_layer_as_its_in_flight_layer() -> None:
    from werkzeug.test import EnvironBuilder

    from flask_gnar.inflight import serving_layer

    app = app_with_a_slope()
    layer = serving_layer(app.wsgi_app)
    assert layer is app.wsgi_app, "one WSGI layer counts both"
    body = layer(EnvironBuilder(path="/slope").get_environ(), lambda status, headers, exc=None: None)
    assert layer.count == 1
    assert b"black" in b"".join(body)
    body.close()
    assert layer.count == 0
    assert request_totals(scrape_of(app)) == {("GET", "/slope", "200"): 1.0}


def test_requests_served_while_a_worker_drains_are_counted() -> None:
    from werkzeug.test import EnvironBuilder

    app = app_with_a_slope()
    layer = app.wsgi_app
    answers: list[tuple[str, dict[str, str]]] = []

    def call() -> None:
        body = layer(EnvironBuilder(path="/slope").get_environ(),
                     lambda status, headers, exc=None: answers.append((status, dict(headers))))
        b"".join(body)
        body.close()

    layer.closing = True  # what the drain sets: served, and the client asked to close
    call()
    layer.refusing = True  # the app is stopping: answered without reaching it
    call()
    assert [(status[:3], headers["Connection"]) for status, headers in answers] == [
        ("200", "close"), ("503", "close")
    ]
    assert layer.count == 0
    layer.closing = layer.refusing = False  # for the scrape
    assert request_totals(scrape_of(app)) == {("GET", "/slope", "200"): 1.0}


def test_each_run_gets_a_new_folder_and_a_crashed_runs_folder_goes(tmp_path: Path) -> None:
    crashed = Tally(TALLY_WORKERS="2", GNAR_METRICS_DIR=str(tmp_path))
    crashed.get("/user/1")
    stop(crashed.process)  # SIGKILL to the whole group: nothing cleans up
    [left_over] = tmp_path.glob("gnar-metrics-tally-*")
    tally = Tally(TALLY_WORKERS="2", GNAR_METRICS_DIR=str(tmp_path))
    try:
        [folder] = tmp_path.glob("gnar-metrics-tally-*")
        assert folder != left_over, "the crashed run's folder is removed, a new one made"
        assert request_totals(tally.scrape()) == {}, "no count comes back from the last run"
        tally.process.send_signal(signal.SIGTERM)
        assert tally.process.wait(timeout=30) == 0
    finally:
        output = stop(tally.process)
    assert not list(tmp_path.glob("gnar-metrics-*")), output


def test_a_folder_in_use_by_another_run_is_left_alone(tmp_path: Path) -> None:
    from flask_gnar.metrics import MultiprocessFolder

    running = MultiprocessFolder(tmp_path, "svc")
    second = MultiprocessFolder(tmp_path, "svc")
    try:
        assert running.path.is_dir() and second.path.is_dir() and running.path != second.path
    finally:
        second.remove()
        running.remove()
    assert not list(tmp_path.iterdir())


def test_pool_gauges_follow_the_database_pool(gnar_create_app: Any) -> None:
    app = gnar_create_app("snowy", no_jwt=True, config={"GNAR_PG_MAX_CONNECTIONS": 3})

    @app.get("/query")
    def query() -> dict[str, int]:
        return {"one": get_state(app).db.one("SELECT 1")}

    assert app.test_client().get("/query").status_code == 200
    scrape = scrape_of(app)
    assert samples(scrape, "gnar_db_pool_max_connections") == {(): 3.0}
    connections = samples(scrape, "gnar_db_pool_connections")
    assert connections[(("state", "in_use"),)] == 0.0
    assert connections[(("state", "idle"),)] >= 1.0


def test_a_worker_reusing_a_dead_workers_pid_adds_to_its_figures(tmp_path: Path) -> None:
    from werkzeug.routing import Rule

    from flask_gnar.request_files import RequestFiles, RequestFilesCollector, labels_file

    rule_a, rule_b = Rule("/a", endpoint="a"), Rule("/b", endpoint="b")

    def totals() -> dict[tuple[str, ...], float]:
        [counter, histogram] = RequestFilesCollector(tmp_path).collect()
        counts = {tuple(s.labels.values()): s.value for s in counter.samples}
        [inf] = [s for s in histogram.samples
                 if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"
                 and s.labels["route"] == "/a" and s.labels["method"] == "GET"]
        assert inf.value == counts[("GET", "/a", "200")], "histogram count = counter"
        return counts

    dead = RequestFiles(tmp_path)
    for _ in range(3):
        dead.request(rule_a, "GET", "200 OK", 0.001)
    dead.request(rule_b, "GET", "404 NOT FOUND", 0.2)
    with labels_file(tmp_path, os.getpid()).open("a") as labels:
        labels.write('["GET", "/c')  # the worker died writing a label line
    reborn = RequestFiles(tmp_path)  # same pid, as a replacement worker may get
    reborn.request(rule_a, "GET", "200 OK", 0.002)
    reborn.request(rule_a, "POST", "201 CREATED", 0.002)
    try:
        assert totals() == {
            ("GET", "/a", "200"): 4.0, ("GET", "/b", "404"): 1.0, ("POST", "/a", "201"): 1.0,
        }
    finally:
        dead.close()
        reborn.close()
