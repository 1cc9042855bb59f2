"""The worker's view: the events it has handled, and the caller's profile from piste."""

from flask import Blueprint, jsonify
from flask_jwt_extended import jwt_required

from flask_gnar import gnar

from ..events import recent_events

blueprint = Blueprint("feed", __name__, url_prefix="/feed")


@blueprint.get("/")
@jwt_required()
def feed():
    profile = gnar.peer("piste").get("/users/me", auto_auth=True)
    profile.raise_for_status()
    return jsonify({"me": profile.json(), "events": recent_events()})
