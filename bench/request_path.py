"""The per-request cost of flask-gnar's hooks, without a server: CPU µs per WSGI call.

    python bench/request_path.py [--rounds 200] [--calls 1000]

Each variant's app is called directly (``app(environ, start_response)``, the body read
and closed as a server would) for ``GET /json``; rounds alternate the variants and
the medians are compared with bare Flask in the same run. ``multiprocess`` puts
prometheus_client in multiprocess mode as a production ``serve()`` worker does
(it is process-wide, so each variant runs in a process of its own).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from common import alternating_rounds, machine, median, with_create_apps_flask_parts

PAYLOAD = {"hello": "world", "numbers": list(range(10))}
VARIANTS = {
    "bare": "bare Flask",
    "bare-lean": "bare Flask with create_app's JSON provider and session interface",
    "gnar-nojwt-nometrics": "create_app(no_db, no_jwt), GNAR_METRICS=false",
    "gnar-nometrics": "create_app(no_db), GNAR_METRICS=false",
    "gnar-inprocess": "create_app(no_db), metrics in one process",
    "gnar-pcmp": "the same, request figures in prometheus_client's multiprocess values",
    "gnar": "create_app(no_db), metrics in multiprocess mode (a serve() worker)",
}


def build(variant: str) -> Any:
    from flask import Flask, jsonify

    if variant.startswith("bare"):
        app = Flask("bare")
        if variant == "bare-lean":
            with_create_apps_flask_parts(app)
    else:
        from flask_gnar import create_app, get_state
        from flask_gnar.inflight import serving_layer

        config: dict[str, Any] = {"GNAR_LOG_LEVEL": "WARNING",
                                  "GNAR_JWT_SECRET_KEY": "x" * 40,
                                  "GNAR_METRICS": "metrics" not in variant}
        app = create_app("benchsvc", production=True, no_db=True,
                         no_jwt="nojwt" in variant, config=config)
        state = get_state(app)
        if variant in ("gnar", "gnar-pcmp"):
            state.prepare_serving()
            state.start()
        if variant == "gnar-pcmp":  # what GnarMetrics would cost without its request table
            state.metrics.http = state.metrics.recorder

    @app.get("/json")
    def json_route() -> Any:
        return jsonify(PAYLOAD)

    if variant.startswith("bare"):
        return app
    return serving_layer(app.wsgi_app)


def time_calls(wsgi: Any, calls: int) -> float:
    from werkzeug.test import EnvironBuilder

    base = EnvironBuilder(path="/json", headers={"Accept": "*/*"}).get_environ()

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        pass

    started = time.process_time()  # CPU time: the shared machine's other jobs do not count
    for _ in range(calls):
        body = wsgi(dict(base), start_response)
        for _chunk in body:
            pass
        body.close()
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("GNAR_METRICS_DIR")) as folder:
        os.environ["GNAR_METRICS_DIR"] = folder
        # the multiprocess variants last: the first of them switches prometheus_client's mode
        apps = {variant: build(variant) for variant in VARIANTS}
        for wsgi in apps.values():
            time_calls(wsgi, args.calls)
        results = alternating_rounds(VARIANTS, args.rounds,
                                     lambda variant: time_calls(apps[variant], args.calls))
    print(f"machine: {machine()}; {args.rounds} alternating rounds of {args.calls} calls, "
          "medians of CPU time")
    bare = median(results["bare"])
    for variant, label in VARIANTS.items():
        value = median(results[variant])
        print(f"{variant:<22}{value:>7.2f} µs/request {value - bare:>+6.2f} µs "
              f"{bare / value:>7.3f}x bare  {label}")


if __name__ == "__main__":
    main()
