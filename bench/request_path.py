"""The per-request cost of flask-gnar's hooks, without a server: CPU µs per WSGI call.

    python bench/request_path.py [--rounds 7] [--calls 20000]

Each variant's app is called directly (``app(environ, start_response)``, the body read
and closed as a server would) for ``GET /json``; rounds alternate the variants and
the medians are compared with bare Flask in the same run. ``multiprocess`` puts
prometheus_client in multiprocess mode as a production ``serve()`` worker does
(it is process-wide, so each variant runs in a process of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import machine, median

PAYLOAD = {"hello": "world", "numbers": list(range(10))}
VARIANTS = {
    "bare": "bare Flask",
    "gnar-nojwt-nometrics": "create_app(no_db, no_jwt), GNAR_METRICS=false",
    "gnar-nometrics": "create_app(no_db), GNAR_METRICS=false",
    "gnar-inprocess": "create_app(no_db), metrics in one process",
    "gnar": "create_app(no_db), metrics in multiprocess mode (a serve() worker)",
}


def build(variant: str) -> Any:
    from flask import Flask, jsonify

    if variant == "bare":
        app = Flask("bare")
    else:
        from flask_gnar import create_app, get_state
        from flask_gnar.serve import InFlight

        config: dict[str, Any] = {"GNAR_LOG_LEVEL": "WARNING",
                                  "GNAR_JWT_SECRET_KEY": "x" * 40,
                                  "GNAR_METRICS": "metrics" not in variant}
        app = create_app("benchsvc", production=True, no_db=True,
                         no_jwt="nojwt" in variant, config=config)
        state = get_state(app)
        if variant == "gnar":
            state.prepare_serving()
            state.start()

    @app.get("/json")
    def json_route() -> Any:
        return jsonify(PAYLOAD)

    if variant == "bare":
        return app
    return InFlight(app.wsgi_app)


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


def child(variant: str, calls: int) -> None:
    wsgi = build(variant)
    time_calls(wsgi, calls // 10)
    print(json.dumps(time_calls(wsgi, calls)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.calls)
        return
    results: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory(dir=os.environ.get("GNAR_METRICS_DIR")) as folder:
        env = {**os.environ, "GNAR_METRICS_DIR": folder}
        for round_number in range(args.rounds):
            order = list(VARIANTS)[round_number % len(VARIANTS):] + list(VARIANTS)[:round_number % len(VARIANTS)]
            for variant in order:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", variant, "--calls", str(args.calls)],
                    env=env, capture_output=True, text=True, check=True,
                ).stdout
                results[variant].append(float(out.strip().splitlines()[-1]))
            print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    print(f"\nmachine: {machine()}; {args.calls} calls per round, {args.rounds} rounds, medians")
    bare = median(results["bare"])
    for variant, label in VARIANTS.items():
        value = median(results[variant])
        print(f"{variant:<22}{value:>8.1f} µs/request  {value - bare:>+6.1f} µs  "
              f"{bare / value:>6.3f}x bare   {label}")


if __name__ == "__main__":
    main()
