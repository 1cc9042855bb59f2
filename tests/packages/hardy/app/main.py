"""A production service for the hardening tests: JSON, JWT, database and SQS routes.

``python -m hardy.app.main PORT``. Environment: ``HARDY_DB=1`` adds GnarDB (the
``GNAR_PG_*`` settings say where), ``HARDY_QUEUE`` polls that queue with a
callback that appends ``start``/``end`` lines (pid, message id, body) to the
file ``HARDY_LEDGER``; a body ``sleep:<seconds>:<anything>`` makes the callback that slow.
"""

import os
import sys
import time

from flask import jsonify, request
from flask_jwt_extended import jwt_required

from flask_gnar import create_app, current_identity, gnar, serve


def record(message):
    ledger = os.environ["HARDY_LEDGER"]
    line = f"{os.getpid()} {message['MessageId']} {message['Body']}"
    append(ledger, f"start {line}")
    if message["Body"].startswith("sleep:"):
        time.sleep(float(message["Body"].split(":")[1]))
    append(ledger, f"end {line}")


def append(path, line):
    """One write per line on an O_APPEND file: lines from several workers never mix."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


queue = os.environ.get("HARDY_QUEUE")
app = create_app(
    "hardy",
    production=os.environ.get("HARDY_PRODUCTION", "1") == "1",
    port=int(sys.argv[1]) if len(sys.argv) > 1 else 9400,
    no_db=os.environ.get("HARDY_DB") != "1",
    sqs={"queue_name": queue, "callback": record, "wait_time_seconds": 1} if queue else None,
)


@app.get("/pid")
def pid():
    return jsonify({"pid": os.getpid()})


@app.post("/echo")
def echo():
    return jsonify({"echo": request.get_json()})


@app.get("/protected")
@jwt_required()
def protected():
    return jsonify({"identity": current_identity()})


@app.get("/db")
def answer():
    return jsonify({"answer": gnar.db.one("SELECT 42")})


@app.post("/db/visits")
def visit():
    gnar.db.run("INSERT INTO visits (who) VALUES (%(who)s)", {"who": request.get_json()["who"]})
    return jsonify({"visits": gnar.db.one("SELECT count(*) FROM visits")})


@app.get("/crash")
def crash():
    raise RuntimeError("the view failed")


@app.post("/sqs/<queue_name>")
def send(queue_name):
    return jsonify(gnar.send_sqs_message(queue_name, request.get_data(as_text=True)))


if __name__ == "__main__":
    serve(app, host="127.0.0.1")
