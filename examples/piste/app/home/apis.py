"""``GET /``: what piste is and how to call it, instead of a 404."""

from flask import Blueprint, current_app, jsonify

from flask_gnar import gnar

blueprint = Blueprint("home", __name__)

STEPS = [
    'POST /users/signup   {"email": ..., "password": ...}   creates an account (201)',
    'POST /users/login    {"email": ..., "password": ...}   answers {"access_token": ...}',
    "GET  /users/me       Authorization: Bearer <token>     your account, and a refreshed token",
]


@blueprint.get("/")
def home():
    routes = sorted({rule.rule for rule in current_app.url_map.iter_rules() if rule.endpoint != "static"})
    return jsonify({
        "service": gnar.name,
        "about": "the user service: accounts in Postgres, Argon2 password hashes, JWT logins",
        "try": STEPS,
        "routes": routes,
    })
