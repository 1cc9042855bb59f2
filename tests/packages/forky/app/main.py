"""A database service that queries before serve() forks its workers."""

import os
import sys

from flask import jsonify

from flask_gnar import create_app, gnar, serve

app = create_app("forky", production=True, port=int(sys.argv[1]), no_jwt=True)

with app.app_context():
    print(f"PARENT backend={gnar.db.one('SELECT pg_backend_pid()')}", flush=True)


@app.get("/backend")
def backend():
    return jsonify({"backend": gnar.db.one("SELECT pg_backend_pid()"), "pid": os.getpid()})


if __name__ == "__main__":
    serve(app, host="127.0.0.1", workers=2)
