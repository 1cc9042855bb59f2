from flask import Blueprint, abort, jsonify

blueprint = Blueprint("lifts", __name__, url_prefix="/lifts")


@blueprint.get("/")
def list_lifts():
    return jsonify({"lifts": ["gondola", "t-bar"]})


@blueprint.get("/<name>")
def get_lift(name):
    if name != "gondola":
        abort(404, description=f"no lift named {name}")
    return jsonify({"name": name})


@blueprint.get("/crash")
def crash():
    raise RuntimeError("the lift jammed")
