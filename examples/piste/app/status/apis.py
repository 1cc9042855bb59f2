from flask import Blueprint, jsonify

from flask_gnar import gnar

blueprint = Blueprint("status", __name__, url_prefix="/status")


@blueprint.get("/")
def status():
    mode = "production" if gnar.production else "development"
    return jsonify({"service": gnar.name, "mode": mode, "port": gnar.port})
