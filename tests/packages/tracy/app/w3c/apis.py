"""The W3C Trace Context harness's test service: forward each call it asks for, with gnar.peer."""

from urllib.parse import urlsplit

from flask import Blueprint, jsonify, request

from flask_gnar import gnar

blueprint = Blueprint("w3c", __name__)


@blueprint.post("/test")
def test():
    for action in request.get_json():
        # GNAR_PEER_HARNESS_URL points at the harness; the scope is the path
        gnar.peer("harness").post(urlsplit(action["url"]).path, json=action["arguments"])
    return jsonify({})
