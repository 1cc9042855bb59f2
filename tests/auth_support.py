"""A small service with a login and protected routes, for the JWT and CORS tests.

``SERVE`` runs it under flask-gnar's ``serve`` in a subprocess (bjoern when
``GNAR_PRODUCTION=1``); the test files run that code with this directory as cwd.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from flask_jwt_extended import create_access_token, create_refresh_token, jwt_required

from flask_gnar import GnarCORS, GnarErrors, GnarJWT, current_identity
from helpers import free_port, start_process, stop, wait_for_http

HERE = Path(__file__).resolve().parent
SECRET = "a-test-secret-that-is-long-enough-for-hs256!"
SERVE = "from auth_support import build_app; from flask_gnar import serve; serve(build_app(), host='127.0.0.1')"


def build_app(config: dict[str, Any] | None = None, **jwt_options: Any) -> Flask:
    app = Flask("auth_support")
    app.config.update(config or {})
    GnarErrors(app)
    GnarJWT(app, **jwt_options)
    GnarCORS(app)

    @app.post("/login")
    def login() -> Any:
        identity = (request.get_json(silent=True) or {}).get("identity", 42)
        return jsonify(
            access_token=create_access_token(identity=identity, additional_claims={"role": "patrol"}),
            refresh_token=create_refresh_token(identity=identity),
        )

    @app.route("/lifts/<int:lift_id>", methods=["GET", "PATCH", "DELETE"])
    @jwt_required()
    def lift(lift_id: int) -> Any:
        return jsonify(lift=lift_id, method=request.method, identity=current_identity())

    @app.get("/runs")
    def runs() -> Any:
        return jsonify(runs=["couloir"])

    @app.get("/crash")
    @jwt_required()
    def crash() -> Any:
        raise RuntimeError("the lift jammed")

    return app


@contextlib.contextmanager
def served(**env: str) -> Iterator[str]:
    """``build_app()`` served in a subprocess; yields its base URL."""
    port = free_port()
    process: subprocess.Popen[str] = start_process(SERVE, cwd=HERE, GNAR_PORT=str(port), **env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/runs", process=process)
        yield base
    finally:
        stop(process)


# --- crafted tokens ------------------------------------------------------------------


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged(token: str) -> str:
    """The same signature over claims that now say ``sub: admin``."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    return ".".join([header, b64(claims), signature])


def alg_none(token: str) -> str:
    """The same claims, unsigned, with ``alg: none``."""
    return ".".join([b64({"alg": "none", "typ": "JWT"}), token.split(".")[1], ""])
