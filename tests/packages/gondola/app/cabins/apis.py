from flask import Blueprint, jsonify, request
from flask_jwt_extended import create_access_token, jwt_required

from flask_gnar import current_identity

blueprint = Blueprint("cabins", __name__, url_prefix="/cabins")


@blueprint.post("/login")
def login():
    rider = (request.get_json(silent=True) or {}).get("rider", "anonymous")
    return jsonify({"access_token": create_access_token(identity=rider)})


@blueprint.patch("/<int:cabin>")
@jwt_required()
def update(cabin):
    return jsonify({"cabin": cabin, "rider": current_identity(), "changes": request.get_json()})


@blueprint.patch("/jammed")
@jwt_required()
def jammed():
    raise RuntimeError("the cabin door jammed")
