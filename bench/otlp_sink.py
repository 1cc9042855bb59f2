"""A local OTLP/HTTP receiver for the tracing benchmark: ``python bench/otlp_sink.py PORT``.

Accepts ``POST /v1/traces`` (protobuf), counts the spans, answers ``GET /count``.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ANSWER = ExportTraceServiceResponse().SerializeToString()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    spans = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        export = ExportTraceServiceRequest.FromString(
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
        )
        count = sum(len(s.spans) for r in export.resource_spans for s in r.scope_spans)
        with Sink.lock:
            Sink.spans += count
        self.answer(ANSWER, "application/x-protobuf")

    def do_GET(self) -> None:
        self.answer(str(Sink.spans).encode(), "text/plain")

    def answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
