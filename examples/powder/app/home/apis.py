"""``GET /``: what powder is and how to call it, instead of a 404."""

from flask import Blueprint, current_app, jsonify

from flask_gnar import gnar

from ..events import recent_events

blueprint = Blueprint("home", __name__)


@blueprint.get("/")
def home():
    return jsonify({
        "service": gnar.name,
        "about": "the worker: handles piste's events from SQS and calls piste through gnar.peer",
        "try": ["GET /feed/   Authorization: Bearer <a token from piste's /users/login>"],
        "events_handled": len(recent_events()),
        "routes": sorted({rule.rule for rule in current_app.url_map.iter_rules() if rule.endpoint != "static"}),
    })
