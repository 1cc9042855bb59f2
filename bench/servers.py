"""The servers the HTTP benchmark compares: ``python bench/servers.py KIND PORT WORKERS``.

gnar        flask-gnar's create_app + serve() in production (bjoern, pre-forked workers):
            JWT and metrics on (the defaults), no database
gnar-nometrics  the same with GNAR_METRICS=false
gnar-login  the same, plus POST /login verifying an Argon2 hash with the default parameters
bjoern      bare Flask on bjoern, forked after listen(reuse_port=True) (one shared socket)
bjoern-rp   bare Flask on bjoern, each forked process with its own SO_REUSEPORT socket
bjoern-lean the same with create_app's JSON provider and session interface: what
            flask-gnar's own layers cost, against Flask with the same Flask parts
gunicorn    bare Flask on gunicorn's sync workers
db-gnar     create_app + serve() in production, GET /db answers gnar.db.one("SELECT 1")
db-bare     bare Flask + postgres.py on bjoern, the same route (database: BENCH_PG_URI)
"""

from __future__ import annotations

import gc
import os
import sys

from flask import Flask, jsonify

PAYLOAD = {"hello": "world", "numbers": list(range(10))}


def bare_app(lean: bool = False) -> Flask:
    app = Flask("bare")
    if lean:
        from common import with_create_apps_flask_parts

        with_create_apps_flask_parts(app)
        # importing flask_gnar loads every extension: frozen as serve() freezes them,
        # they cost this baseline no more garbage collection than bare Flask's
        gc.freeze()

    @app.get("/json")
    def json_route():
        return jsonify(PAYLOAD)

    return app


def gnar_app(port: int, metrics: bool = True) -> Flask:
    from flask_gnar import create_app

    app = create_app("benchsvc", production=True, port=port, no_db=True,
                     config={"GNAR_LOG_LEVEL": "WARNING", "GNAR_METRICS": metrics,
                             "GNAR_JWT_SECRET_KEY": "a-benchmark-secret-of-at-least-32-bytes"})

    @app.get("/json")
    def json_route():
        return jsonify(PAYLOAD)

    return app


def login_app(port: int) -> Flask:
    """flask-gnar with the default Argon2 parameters: /login verifies one password hash."""
    from flask import request

    from flask_gnar import gnar

    app = gnar_app(port)
    with app.app_context():
        stored = gnar.generate_password_hash("correct horse battery staple")

    @app.post("/login")
    def login():
        password = (request.get_json(silent=True) or {}).get("password", "")
        return jsonify({"ok": gnar.check_password_hash(stored, password)})

    return app


def db_gnar_app(port: int) -> Flask:
    from flask_gnar import create_app, gnar

    app = create_app("benchsvc", production=True, port=port,
                     config={"GNAR_LOG_LEVEL": "WARNING", "GNAR_JWT_SECRET_KEY": "b" * 40,
                             "GNAR_PG_DSN": os.environ["BENCH_PG_URI"]})

    @app.get("/db")
    def db_route():
        return jsonify({"answer": gnar.db.one("SELECT 1")})

    return app


def run_db_bare(port: int) -> None:
    """postgres.py's own pool with GnarDB's default bounds."""
    import bjoern
    import postgres

    app = Flask("bare")
    db = postgres.Postgres(os.environ["BENCH_PG_URI"], minconn=1, maxconn=10)

    @app.get("/db")
    def db_route():
        return jsonify({"answer": db.one("SELECT 1")})

    bjoern.run(app, "127.0.0.1", port, reuse_port=True)


def run_bare_bjoern(port: int, workers: int) -> None:
    import bjoern

    app = bare_app()
    bjoern.listen(app, "127.0.0.1", port, reuse_port=True)
    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    bjoern.run()


def run_bare_bjoern_own_sockets(port: int, workers: int, lean: bool = False) -> None:
    """Fork first, then every process binds its own SO_REUSEPORT socket."""
    import bjoern

    app = bare_app(lean)
    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    bjoern.run(app, "127.0.0.1", port, reuse_port=True)


def run_gunicorn(port: int, workers: int) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"127.0.0.1:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("loglevel", "warning")
            self.cfg.set("accesslog", None)

        def load(self) -> Flask:
            return bare_app()

    Server().run()


def main() -> None:
    kind, port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if kind in ("gnar", "gnar-login", "gnar-nometrics"):
        from flask_gnar import serve

        if kind == "gnar-login":
            app = login_app(port)
        else:
            app = gnar_app(port, metrics=kind == "gnar")
        serve(app, host="127.0.0.1", workers=workers)
    elif kind == "db-gnar":
        from flask_gnar import serve as serve_gnar

        serve_gnar(db_gnar_app(port), host="127.0.0.1", workers=workers)
    elif kind == "db-bare":
        run_db_bare(port)
    elif kind == "bjoern":
        run_bare_bjoern(port, workers)
    elif kind in ("bjoern-rp", "bjoern-lean"):
        run_bare_bjoern_own_sockets(port, workers, lean=kind == "bjoern-lean")
    elif kind == "gunicorn":
        run_gunicorn(port, workers)
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


if __name__ == "__main__":
    main()
