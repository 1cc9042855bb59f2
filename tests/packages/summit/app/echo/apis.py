"""The peer side: routes that tell the caller what they received."""

import logging

from flask import Blueprint, jsonify, request
from flask_jwt_extended import get_jwt_identity, jwt_required

blueprint = Blueprint("echo", __name__)
log = logging.getLogger(__name__)

#: Hits per key of /flaky (bjoern serves one request at a time per process).
FLAKY_HITS: dict[str, int] = {}


@blueprint.route("/echo", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def echo():
    log.info("echo %s", request.method)
    return jsonify(
        {
            "method": request.method,
            "args": request.args.to_dict(),
            "body": request.get_data(as_text=True),
            "request_id": request.headers.get("X-Request-ID"),
            "authorization": request.headers.get("Authorization"),
            "cookie": request.headers.get("Cookie"),
        }
    )


@blueprint.get("/whoami")
@jwt_required()
def whoami():
    return jsonify({"identity": get_jwt_identity()})


@blueprint.route("/flaky/<key>", methods=["GET", "POST"])
def flaky(key):
    """503 on the first hit of each key, 200 afterwards."""
    FLAKY_HITS[key] = FLAKY_HITS.get(key, 0) + 1
    status = 503 if FLAKY_HITS[key] == 1 else 200
    return jsonify({"hits": FLAKY_HITS[key]}), status


@blueprint.get("/hits/<key>")
def hits(key):
    return jsonify({"hits": FLAKY_HITS.get(key, 0)})


@blueprint.get("/cookie")
def set_cookie():
    response = jsonify({"set": "session"})
    response.set_cookie("session", "user-a")
    return response
