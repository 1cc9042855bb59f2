"""Views that call a peer, an external URL and a queue, and one that shows what arrived."""

import os

from flask import Blueprint, jsonify, request

from flask_gnar import gnar

blueprint = Blueprint("traced", __name__)


@blueprint.get("/relay/<service>")
def relay(service):
    answer = gnar.peer(service).get("/headers").json()
    if request.args.get("queue"):
        gnar.send_sqs_message(request.args["queue"], request.args.get("body", f"from {os.getpid()}"))
    return jsonify({"peer_saw": answer, "pid": os.getpid()})


@blueprint.get("/external")
def external():
    return jsonify({"peer_saw": gnar.external.get(request.args["url"]).json()})


@blueprint.get("/headers")
def headers():
    """The trace headers as the app got them (after the server joined repeated lines)."""
    return jsonify(
        {
            "traceparent": request.headers.get("traceparent"),
            "tracestate": request.headers.get("tracestate"),
            "x_forwarded_for": request.headers.get("X-Forwarded-For"),
            "pid": os.getpid(),
        }
    )
