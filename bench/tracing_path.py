"""Tracing's cost per request without a server: CPU µs per WSGI call, export included.

    python bench/tracing_path.py [--rounds 30] [--calls 2048]

The JSON route of a ``create_app`` service (metrics off, as in ``tracing.py``'s
setups they are the same on both sides) called directly, ``GET /json`` as bjoern
passes it: tracing off, spans with no exporter, and every span exported over
OTLP/HTTP to ``otlp_sink.py`` in its own process. The CPU time is the whole
process's (``time.process_time``), so the export thread's encoding and posting
counts; each round ends with a flush of what is buffered. Rounds alternate the
variants; medians. ``--traceparent`` sends an incoming ``traceparent`` too.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import requests

from common import (
    alternating_rounds,
    free_port,
    machine,
    median,
    start_server,
    stop_server,
    wait_until_up,
)

PAYLOAD = {"hello": "world", "numbers": list(range(10))}
VARIANTS = {
    "off": {"GNAR_TRACING": "false"},
    "spans": {"GNAR_TRACING": "true", "OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_EXPORTER": "none"},
    "otlp": {"GNAR_TRACING": "true", "OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_EXPORTER": "otlp"},
}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def build(variant: str, sink_url: str) -> tuple[Any, Any]:
    from flask import jsonify

    from flask_gnar import create_app, get_state

    saved = dict(os.environ)
    os.environ.update(VARIANTS[variant])
    os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"{sink_url}/v1/traces"
    try:
        app = create_app(f"bench{variant}", production=True, no_db=True,
                         config={"GNAR_LOG_LEVEL": "WARNING", "GNAR_METRICS": False,
                                 "GNAR_JWT_SECRET_KEY": "x" * 40})
        state = get_state(app)
        state.start()  # the exporter reads OTEL_EXPORTER_OTLP_* when it is made
    finally:
        os.environ.clear()
        os.environ.update(saved)

    @app.get("/json")
    def json_route() -> Any:
        return jsonify(PAYLOAD)

    tracing = state.tracing
    flush = tracing.process_tracer.flush if tracing is not None else (lambda timeout=0.0: True)
    return app, flush


def base_environ(traceparent: bool) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    headers = {"Accept": "*/*", "User-Agent": "wrk", "Host": "127.0.0.1:8000"}
    if traceparent:
        headers["traceparent"] = TRACEPARENT
    return EnvironBuilder(path="/json", headers=headers).get_environ()


def time_calls(app: Any, flush: Any, base: dict[str, Any], calls: int) -> float:
    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        pass

    started = time.process_time()
    for _ in range(calls):
        body = app(dict(base), start_response)
        for _chunk in body:
            pass
        body.close()
    flush(30.0)
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=2048)
    parser.add_argument("--traceparent", action="store_true")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    sink_port = free_port()
    sink = start_server(["otlp_sink.py", str(sink_port)])
    sink_url = f"http://127.0.0.1:{sink_port}"
    try:
        wait_until_up(f"{sink_url}/count", sink)
        apps = {variant: build(variant, sink_url) for variant in args.only}
        base = base_environ(args.traceparent)
        for app, flush in apps.values():
            time_calls(app, flush, base, args.calls)
        results = alternating_rounds(apps, args.rounds,
                                     lambda variant: time_calls(*apps[variant], base, args.calls))
        spans = int(requests.get(f"{sink_url}/count", timeout=5).text)
    finally:
        stop_server(sink)
    print(f"machine: {machine()}; {args.rounds} alternating rounds of {args.calls} calls, "
          f"medians of process CPU time{' (with a traceparent)' if args.traceparent else ''}; "
          f"{spans} spans received")
    off = median(results["off"]) if "off" in results else None
    for variant, values in results.items():
        value = median(values)
        extra = f" {value - off:>+6.2f} µs {off / value:>6.3f}x off" if off else ""
        print(f"{variant:<8}{value:>7.2f} µs/request{extra}")


if __name__ == "__main__":
    main()
