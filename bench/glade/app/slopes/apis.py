"""The benchmarked route: a JSON answer behind a JWT."""

from typing import Any

from flask import Blueprint, jsonify
from flask_jwt_extended import jwt_required

from flask_gnar import current_identity

blueprint = Blueprint("slopes", __name__, url_prefix="/slopes")


@blueprint.get("/<int:slope_id>")
@jwt_required()
def slope(slope_id: int) -> Any:
    return jsonify(slope=slope_id, identity=current_identity())
