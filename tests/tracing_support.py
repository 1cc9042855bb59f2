"""A small OTLP/HTTP receiver on 127.0.0.1 and the ``tracy`` services for the tracing tests.

The receiver takes what OpenTelemetry's own OTLP exporter posts to ``/v1/traces``
(protobuf, gzip or not), decodes it with opentelemetry-proto and keeps every span.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from helpers import child_env, free_port, kill_group, wait_for_http

SERVE_TRACY = (
    "from tracy.app.main import app; from flask_gnar import get_state, serve;"
    "serve(app, host='127.0.0.1', **({} if get_state(app).production else {'use_reloader': False}))"
)
SCRUBBED_PREFIXES = ("GNAR_", "AWS_", "OTEL_")
#: Spans are exported a tenth of a second after they end, so tests wait briefly.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100"}

KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    pid: int | None
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    error: bool


def attribute_value(value: Any) -> Any:
    field = value.WhichOneof("value")
    return getattr(value, field) if field else None


class Collector:
    """Every span posted to ``http://127.0.0.1:<port>/v1/traces``.

    ``keep_alive``: HTTP/1.1, connections kept open between posts;
    ``close_after_each`` closes each after its answer without saying so (as a
    receiver's idle timeout does). ``targets`` are the request targets received
    (a full URL when the receiver is used as a proxy). ``answer_when``: each post is
    received at once but answered only once that event is set (a slow receiver).
    """

    def __init__(self, keep_alive: bool = False, close_after_each: bool = False,
                 answer_when: threading.Event | None = None) -> None:
        self.spans: list[ReceivedSpan] = []
        self.posts = 0
        self.connections = 0
        self.closed = 0
        self.targets: list[str] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def setup(self) -> None:
                super().setup()
                with collector._lock:
                    collector.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with collector._lock:
                    collector.targets.append(self.path)
                status = 200 if urlsplit(self.path).path == "/v1/traces" else 404
                if status == 200:
                    collector.receive(ExportTraceServiceRequest.FromString(body))
                if answer_when is not None:
                    answer_when.wait(30)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if close_after_each:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def shutdown_request(self, request: Any) -> None:
                super().shutdown_request(request)
                with collector._lock:
                    collector.closed += 1

        self.server = Server(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def receive(self, export: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in export.resource_spans:
            resource = {a.key: attribute_value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            pid=resource.get("process.pid"),
                            name=span.name,
                            kind=KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: attribute_value(a.value) for a in span.attributes},
                            error=span.status.code == 2,
                        )
                    )
        with self._lock:
            self.spans.extend(received)
            self.posts += 1

    def find(self, **fields: Any) -> list[ReceivedSpan]:
        with self._lock:
            spans = list(self.spans)
        return [span for span in spans if all(getattr(span, k) == v for k, v in fields.items())]

    def one(self, **fields: Any) -> ReceivedSpan | None:
        found = self.find(**fields)
        return found[0] if len(found) == 1 else None

    def __enter__(self) -> Collector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Tracy:
    port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records it printed so far (it keeps running)."""
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextmanager
def tracy_service(log: Path, **env: str) -> Iterator[Tracy]:
    """The ``tracy`` service under bjoern (production) on a free port, printing to ``log``."""
    port = free_port()
    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith(SCRUBBED_PREFIXES)}
    try:
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-c", SERVE_TRACY],
                env=child_env(TRACY_PORT=str(port), PYTHONUNBUFFERED="1", **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
    finally:
        os.environ.update(saved)
    try:
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health/live", process=process)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log.read_text()}") from None
        yield Tracy(port, process, log)
    finally:
        kill_group(process)
        process.wait(timeout=10)
