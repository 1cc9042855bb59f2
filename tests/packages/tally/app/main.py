"""A service for the metrics tests: ``python -m tally.app.main PORT``.

``TALLY_WORKERS`` workers (default 2); ``TALLY_QUEUE`` names an SQS queue it polls
(a message whose body is ``fail`` is left on the queue).
"""

import os
import sys

from flask import jsonify, request

from flask_gnar import create_app, gnar, serve


def handle(message):
    return message["Body"] != "fail"


queue = os.environ.get("TALLY_QUEUE")
app = create_app(
    "tally", production=True, port=int(sys.argv[1]), no_db=True, no_jwt=True,
    sqs={"queue_name": queue, "callback": handle, "wait_time_seconds": 1} if queue else None,
)


@app.get("/user/<int:user_id>")
def user(user_id):
    return jsonify({"id": user_id, "pid": os.getpid()})


@app.post("/echo")
def echo():
    return jsonify(request.get_json())


@app.get("/peer/<name>")
def call_peer(name):
    try:
        status = gnar.peer(name).get("/").status_code
    except Exception as error:  # the metrics count failed calls too
        return jsonify({"error": type(error).__name__}), 502
    return jsonify({"status": status})


@app.post("/send")
def send():
    gnar.send_sqs_message(queue, request.get_data(as_text=True))
    return jsonify({"sent": True})


if __name__ == "__main__":
    serve(app, host="127.0.0.1", workers=int(os.environ.get("TALLY_WORKERS", "2")))
