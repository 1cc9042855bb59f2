from flask import Blueprint, jsonify

blueprint = Blueprint("runs", __name__, url_prefix="/runs")


@blueprint.route("/", methods=["GET", "POST"])
def list_runs():
    return jsonify({"runs": ["black", "blue"]})
