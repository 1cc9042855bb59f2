"""The caller side: a view that calls a peer service and reports what it answered."""

from flask import Blueprint, jsonify, request
from flask_jwt_extended import jwt_required

from flask_gnar import gnar

blueprint = Blueprint("relay", __name__)


@blueprint.get("/relay/<service>/<path:path>")
@jwt_required(optional=True)
def relay(service, path):
    response = gnar.peer(service).get(path, auto_auth=request.args.get("auth") == "1")
    return jsonify({"status": response.status_code, "body": response.json()})
