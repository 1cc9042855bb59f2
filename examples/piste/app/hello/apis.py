from flask import Blueprint, jsonify

from flask_gnar import gnar

blueprint = Blueprint("hello", __name__, url_prefix="/hello")


@blueprint.get("/")
def hello():
    return jsonify({"hello": "world", "service": gnar.name})


@blueprint.get("/<name>")
def hello_name(name):
    return jsonify({"hello": name, "service": gnar.name})
