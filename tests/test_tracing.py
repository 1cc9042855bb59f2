"""GnarTracing: traces exported over OTLP to a real receiver, across a peer call and an SQS queue.

Two ``tracy`` services run under bjoern: ``alpha`` (two workers) calls ``beta`` with
``gnar.peer`` and sends an SQS message that ``beta`` polls from moto. Every span is
read back from the receiver and the parent links are checked.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from flask_gnar import ConfigError, create_app, get_state
from flask_gnar.testing import LocalAWS

from helpers import start_process, wait_until
from tracing_support import FAST_EXPORT, Collector, ReceivedSpan, Tracy, tracy_service

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with Collector() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def queue(gnar_aws: LocalAWS) -> str:
    name = f"traced-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "sqs",
        endpoint_url=gnar_aws.endpoint_url,
        region_name=gnar_aws.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_queue(QueueName=name)
    return name


def traced_env(collector: Collector, service: str, **extra: str) -> dict[str, str]:
    return {
        "GNAR_TRACING": "true",
        "GNAR_LOG_JSON": "true",
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
        **FAST_EXPORT,
        **extra,
    }


@pytest.fixture(scope="module")
def beta(
    collector: Collector, gnar_aws: LocalAWS, queue: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tracy]:
    log = tmp_path_factory.mktemp("beta") / "out.log"
    with tracy_service(log, **traced_env(collector, "beta", TRACY_QUEUE=queue), **gnar_aws.env) as service:
        yield service


@pytest.fixture(scope="module")
def alpha(
    collector: Collector, gnar_aws: LocalAWS, beta: Tracy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Tracy]:
    env = traced_env(collector, "alpha", GNAR_WORKERS="2", GNAR_PEER_BETA_URL=beta.url)
    log = tmp_path_factory.mktemp("alpha") / "out.log"
    with tracy_service(log, **env, **gnar_aws.env) as service:
        yield service


def child_of(collector: Collector, parent: ReceivedSpan, **fields: Any) -> ReceivedSpan:
    return wait_until(
        lambda: collector.one(trace_id=parent.trace_id, parent_id=parent.span_id, **fields),
        what=f"a span {fields} under {parent.name}",
    )


def test_one_trace_through_a_peer_call_and_an_sqs_message(
    alpha: Tracy, beta: Tracy, collector: Collector, queue: str
) -> None:
    answer = requests.get(
        f"{alpha.url}/relay/beta",
        params={"queue": queue},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "congo=t61rcWkgMzE"},
        timeout=10,
    )
    assert answer.status_code == 200
    sent = answer.json()["peer_saw"]
    version, trace_id, parent_id, flags = sent["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert sent["tracestate"] == "congo=t61rcWkgMzE"

    request_span = wait_until(
        lambda: collector.one(service="alpha", kind="server", trace_id=TRACE_ID),
        what="alpha's request span",
    )
    assert request_span.parent_id == PARENT_ID
    assert request_span.name == "GET /relay/<service>"
    assert request_span.attributes["http.route"] == "/relay/<service>"
    assert request_span.attributes["http.response.status_code"] == 200

    peer_span = child_of(collector, request_span, service="alpha", kind="client")
    assert peer_span.span_id == parent_id  # what beta got is the client span, not the request's
    assert peer_span.attributes["peer.service"] == "beta"
    assert peer_span.attributes["http.response.status_code"] == 200
    beta_span = child_of(collector, peer_span, service="beta", kind="server")
    assert beta_span.name == "GET /headers"

    create_span = child_of(collector, request_span, service="alpha", kind="producer")
    assert create_span.name == f"create {queue}"
    process_span = child_of(collector, create_span, service="beta", kind="consumer")
    assert process_span.name == f"process {queue}"
    assert process_span.attributes["messaging.destination.name"] == queue
    assert not process_span.error

    # the callback's log line carries the consumer span's ids
    handled = wait_until(
        lambda: [r for r in beta.records() if r["message"].startswith("handled from")],
        what="beta's log line from the callback",
    )
    assert handled[0]["trace_id"] == TRACE_ID
    assert handled[0]["span_id"] == process_span.span_id


def test_a_callback_that_returns_false_marks_its_span_as_an_error(
    alpha: Tracy, beta: Tracy, collector: Collector, queue: str
) -> None:
    trace_id = uuid.uuid4().hex
    requests.get(
        f"{alpha.url}/relay/beta",
        params={"queue": queue, "body": "reject me"},
        headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"},
        timeout=10,
    )
    process_span = wait_until(
        lambda: collector.find(service="beta", kind="consumer", trace_id=trace_id),
        what="the consumer span of the rejected message",
    )[0]
    assert process_span.error
    assert process_span.attributes["error.type"] == "callback_returned_false"


def test_every_worker_exports_its_own_spans(alpha: Tracy, collector: Collector) -> None:
    """Spans are made after the fork: both workers' spans reach the receiver."""
    seen: set[int] = set()

    def both_workers_answered() -> bool:
        with requests.Session() as fresh:  # a new connection may land on the other worker
            seen.add(fresh.get(f"{alpha.url}/relay/beta", timeout=10).json()["pid"])
        return len(seen) == 2

    wait_until(both_workers_answered, what="both workers to answer")
    exporting = lambda: {span.pid for span in collector.find(service="alpha")} >= seen  # noqa: E731
    wait_until(exporting, what=f"spans from workers {seen}")


def test_a_request_without_traceparent_starts_a_trace(alpha: Tracy, collector: Collector) -> None:
    sent = requests.get(f"{alpha.url}/relay/beta", timeout=10).json()["peer_saw"]
    _, trace_id, parent_id, flags = sent["traceparent"].split("-")
    assert trace_id != "0" * 32 and int(flags, 16) & 1  # sampled (the SDK may set the random flag too)
    request_span = wait_until(lambda: collector.one(service="alpha", kind="server", trace_id=trace_id))
    assert request_span.parent_id == ""
    assert child_of(collector, request_span, kind="client").span_id == parent_id


def test_gnar_external_sends_no_trace_context(alpha: Tracy, beta: Tracy) -> None:
    sent = requests.get(
        f"{alpha.url}/external",
        params={"url": f"{beta.url}/headers"},
        headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        timeout=10,
    ).json()["peer_saw"]
    assert sent["traceparent"] is None and sent["tracestate"] is None


def raw_get(port: int, path: str, header_lines: list[str]) -> dict[str, Any]:
    """A GET written by hand, so repeated header lines reach the server as they are."""
    head = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *header_lines, "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall("\r\n".join(head).encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    assert b" 200 " in status_line, data
    return dict(json.loads(rest.partition(b"\r\n\r\n")[2]))


def test_bjoern_joins_repeated_header_lines_without_a_separator(beta: Tracy) -> None:
    seen = raw_get(
        beta.port,
        "/headers",
        ["tracestate: a=1", "tracestate: b=2", "X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2"],
    )
    assert seen["tracestate"] == "a=1b=2"
    assert seen["x_forwarded_for"] == "10.0.0.110.0.0.2"


def test_a_joined_tracestate_is_dropped_and_the_trace_goes_on(alpha: Tracy) -> None:
    """``a=1b=2`` is no valid tracestate: Trace Context says drop it, keep the traceparent."""
    traceparent = f"traceparent: 00-{TRACE_ID}-{PARENT_ID}-01"
    joined = raw_get(alpha.port, "/relay/beta", [traceparent, "tracestate: a=1", "tracestate: b=2"])
    assert joined["peer_saw"]["traceparent"].split("-")[1] == TRACE_ID
    assert joined["peer_saw"]["tracestate"] is None
    one_line = raw_get(alpha.port, "/relay/beta", [traceparent, "tracestate: a=1,b=2"])
    assert one_line["peer_saw"]["tracestate"] == "a=1,b=2"


def test_a_joined_traceparent_starts_a_new_trace(alpha: Tracy) -> None:
    first, second = f"00-{TRACE_ID}-{PARENT_ID}-01", f"00-{'1' * 32}-{'2' * 16}-01"
    seen = raw_get(alpha.port, "/relay/beta", [f"traceparent: {first}", f"traceparent: {second}"])
    trace_id = seen["peer_saw"]["traceparent"].split("-")[1]
    assert trace_id not in (TRACE_ID, "1" * 32, "0" * 32)


# --- in one process ---------------------------------------------------------------------


def make_app(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return create_app("snowy", no_db=True, no_jwt=True, config={"TESTING": True})


def test_json_logs_carry_the_span_ids_only_while_a_span_is_active(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(monkeypatch, GNAR_TRACING="true", GNAR_LOG_JSON="true", OTEL_TRACES_EXPORTER="none")

    @app.get("/log")
    def log_something() -> str:
        app.logger.warning("inside")
        return "ok"

    capsys.readouterr()
    app.test_client().get("/log", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    app.logger.warning("outside")
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    inside = next(r for r in records if r["message"] == "inside")
    outside = next(r for r in records if r["message"] == "outside")
    assert inside["trace_id"] == TRACE_ID
    assert len(inside["span_id"]) == 16 and inside["span_id"] != PARENT_ID
    assert inside["span_id"] == inside["span_id"].lower() and int(inside["span_id"], 16)
    assert "trace_id" not in outside and "span_id" not in outside


def test_the_console_exporter_prints_the_spans(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(monkeypatch, GNAR_TRACING="true", OTEL_TRACES_EXPORTER="console")

    @app.get("/printed")
    def printed() -> str:
        return "ok"

    app.test_client().get("/printed", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    tracing = get_state(app).tracing
    assert tracing is not None and tracing.process_tracer.flush(10)  # type: ignore[attr-defined]
    tracing.process_tracer.stop()  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert '"name": "GET /printed"' in out and f'"trace_id": "0x{TRACE_ID}"' in out


def test_tracing_off_adds_nothing_and_imports_nothing() -> None:
    code = (
        "import sys; from flask_gnar import create_app, get_state;"
        "app = create_app('snowy', no_db=True, no_jwt=True);"
        "print(get_state(app).tracing is None, any(m.startswith('opentelemetry') for m in sys.modules),"
        " type(app.wsgi_app).__name__, sum(map(len, app.before_request_funcs.values())),"
        " sum(map(len, app.after_request_funcs.values())), sum(map(len, app.teardown_request_funcs.values())))"
    )
    # GnarMetrics, which wraps wsgi_app too, is left out to see GnarTracing's part alone
    off = start_process(code, GNAR_METRICS="false")
    on = start_process(code, GNAR_TRACING="1", GNAR_METRICS="false")
    off_out, on_out = off.communicate(timeout=60)[0], on.communicate(timeout=60)[0]
    assert off.returncode == 0 and on.returncode == 0, off_out + on_out
    off_seen, on_seen = off_out.split()[-6:], on_out.split()[-6:]
    assert off_seen[:3] == ["True", "False", "method"]  # Flask's own wsgi_app, no OpenTelemetry
    assert on_seen[:3] == ["False", "True", "partial"]  # the request span wraps it
    assert off_seen[3:] == on_seen[3:]  # and no Flask hook is added either way


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ],
)
def test_a_bad_opentelemetry_variable_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        make_app(monkeypatch, GNAR_TRACING="true", **{variable: value})


@pytest.mark.parametrize("ratio", ["2", "abc", "-0.1"])
def test_a_sampler_ratio_outside_zero_to_one_stops_start_up(
    monkeypatch: pytest.MonkeyPatch, ratio: str
) -> None:
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        make_app(
            monkeypatch, GNAR_TRACING="true", OTEL_TRACES_SAMPLER="traceidratio",
            OTEL_TRACES_SAMPLER_ARG=ratio,
        )


def test_a_bad_gnar_tracing_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="GNAR_TRACING"):
        make_app(monkeypatch, GNAR_TRACING="perhaps")


def test_the_service_name_is_the_apps_unless_otel_service_name_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app(monkeypatch, GNAR_TRACING="true", OTEL_TRACES_EXPORTER="none")
    assert get_state(app).tracing.process_tracer.service_name == "snowy"  # type: ignore[union-attr]
    monkeypatch.setenv("OTEL_SERVICE_NAME", "snowy-eu")
    other = create_app("snowy", no_db=True, no_jwt=True)
    assert get_state(other).tracing.process_tracer.service_name == "snowy-eu"  # type: ignore[union-attr]


def test_database_queries_run_in_spans_of_the_request(
    gnar_create_app: Any, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GNAR_TRACING", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.endpoint)
    app = gnar_create_app("snowy", no_jwt=True)

    @app.get("/count")
    def count() -> dict[str, Any]:
        return {"one": gnar_db(app).one("SELECT %(n)s::int", {"n": 41}) + 1}

    trace_id = uuid.uuid4().hex
    answer = app.test_client().get("/count", headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"})
    assert answer.json == {"one": 42}
    tracing = get_state(app).tracing
    assert tracing is not None and tracing.process_tracer.flush(10)  # type: ignore[attr-defined]
    request_span = wait_until(lambda: collector.one(trace_id=trace_id, kind="server"))
    query = child_of(collector, request_span, kind="client")
    assert query.name == "SELECT"
    assert query.attributes["db.system.name"] == "postgresql"
    assert query.attributes["db.operation.name"] == "SELECT"
    assert "41" not in json.dumps(query.attributes)  # no literal values in the span
    tracing.process_tracer.stop()  # type: ignore[attr-defined]


def gnar_db(app: Any) -> Any:
    return get_state(app).db


def test_a_stopping_worker_exports_its_pending_spans(collector: Collector, tmp_path: Path) -> None:
    """Spans would wait a minute for the timer: SIGTERM makes the worker send them first."""
    env = traced_env(collector, "gamma", OTEL_BSP_SCHEDULE_DELAY="60000", GNAR_PEER_BETA_URL="http://127.0.0.1:9")
    with tracy_service(tmp_path / "gamma.log", **env) as gamma:
        trace_id = uuid.uuid4().hex
        requests.get(
            f"{gamma.url}/headers", headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"}, timeout=10
        )
        assert collector.find(trace_id=trace_id) == []
        gamma.process.send_signal(signal.SIGTERM)
        assert gamma.process.wait(timeout=60) == 0
    assert wait_until(lambda: collector.one(service="gamma", trace_id=trace_id, kind="server"))


# --- the OTLP/HTTP export itself --------------------------------------------------------


def ended_spans(count: int) -> list[Any]:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from flask_gnar.otlp import LeanTracer

    spans: list[Any] = []
    tracer = LeanTracer(ALWAYS_ON, spans.append)
    for number in range(count):
        tracer.start_span(f"span {number}").end()
    return spans


@contextmanager
def otlp_export(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> Iterator[Any]:
    from opentelemetry.sdk.resources import Resource

    from flask_gnar.otlp import OTLPHTTPExport, SpanEncoder

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    export = OTLPHTTPExport(SpanEncoder(Resource.create({"service.name": "exporting"}), "flask_gnar"))
    try:
        yield export
    finally:
        export.close()


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.usefixtures("no_proxy_variables")
def test_batches_go_over_one_kept_alive_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    with Collector(keep_alive=True) as receiver:
        with otlp_export(monkeypatch, receiver.endpoint) as export:
            for _ in range(3):
                export(ended_spans(2))
        assert [span.name for span in receiver.spans] == ["span 0", "span 1"] * 3
        assert receiver.connections == 1


@pytest.mark.usefixtures("no_proxy_variables")
def test_a_connection_the_receiver_closed_is_not_posted_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver that closes idle connections (without a ``Connection: close``) loses nothing."""
    with Collector(keep_alive=True, close_after_each=True) as receiver:
        with otlp_export(monkeypatch, receiver.endpoint) as export:
            export(ended_spans(1))
            wait_until(lambda: receiver.closed == 1, what="the receiver to close the connection")
            export(ended_spans(1))
        assert len(receiver.spans) == 2 and receiver.connections == 2
    assert "could not export" not in caplog.text


@pytest.mark.usefixtures("no_proxy_variables")
def test_a_proxy_variable_sends_the_spans_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with Collector() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server.server_address[1]}")
        with otlp_export(monkeypatch, "http://otel-collector.invalid:4318/v1/traces") as export:
            export(ended_spans(1))
        assert proxy.targets == ["http://otel-collector.invalid:4318/v1/traces"]
        assert [span.name for span in proxy.spans] == ["span 0"]


@pytest.mark.usefixtures("no_proxy_variables")
def test_an_unreachable_receiver_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with otlp_export(monkeypatch, f"http://127.0.0.1:{port}/v1/traces") as export:
        for _ in range(3):
            export(ended_spans(1))
    warnings = [record for record in caplog.records if "could not export" in record.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0].getMessage()


@pytest.mark.usefixtures("no_proxy_variables")
def test_full_batches_leave_from_the_request_thread_which_a_slow_receiver_never_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask_gnar.otlp import BatchSettings, SpanBuffer

    answer = threading.Event()
    answer.set()
    with Collector(keep_alive=True, answer_when=answer) as receiver:
        with otlp_export(monkeypatch, receiver.endpoint) as export:
            buffer = SpanBuffer(export, BatchSettings(schedule_delay_millis=60_000,
                                                      max_export_batch_size=2))

            def end_two_spans() -> None:
                """As two requests would, from a thread of their own; done when it returns."""
                done = threading.Event()

                def end() -> None:
                    for span in ended_spans(2):
                        buffer.add(span)
                    done.set()

                threading.Thread(target=end, daemon=True).start()
                wait_until(done.is_set, what="the spans' ending to return")

            try:
                end_two_spans()  # no connection yet: the export thread opens it
                wait_until(lambda: receiver.posts == 1, what="the first batch")
                answer.clear()  # from now on the receiver answers only when told
                end_two_spans()  # sent by the "request" itself, not waiting for the answer
                wait_until(lambda: receiver.posts == 2, what="the second batch")
                end_two_spans()  # the last answer is not in: the export thread takes it
                answer.set()
                assert buffer.flush(10)
                wait_until(lambda: receiver.posts == 3, what="the third batch")
            finally:
                buffer.shutdown(10)
        assert len(receiver.spans) == 6
        assert receiver.connections == 1
