"""Sign-up, login and "me": Argon2 hashes in Postgres, JWTs, a welcome mail and an event."""

import json

from flask import Blueprint, abort, jsonify, request
from flask_jwt_extended import create_access_token, get_jwt_identity, jwt_required

from flask_gnar import gnar

blueprint = Blueprint("users", __name__, url_prefix="/users")

EVENTS_QUEUE = "piste-events"


def credentials():
    body = request.get_json(silent=True) or {}
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or "@" not in email or not isinstance(password, str) or not password:
        abort(400, description="send JSON with an email and a non-empty password")
    return email.lower(), password


@blueprint.post("/signup")
def signup():
    email, password = credentials()
    user_id = gnar.db.one(
        "INSERT INTO users (email, password_hash) VALUES (%(email)s, %(hash)s) "
        "ON CONFLICT (email) DO NOTHING RETURNING id",
        {"email": email, "hash": gnar.generate_password_hash(password)},
    )
    if user_id is None:
        abort(409, description=f"{email} already has an account")
    gnar.send_email(to=[email], subject="Welcome to piste", body="Fresh powder awaits.")
    gnar.send_sqs_message(EVENTS_QUEUE, json.dumps({"event": "signed_up", "id": user_id, "email": email}))
    return jsonify({"id": user_id, "email": email}), 201


@blueprint.post("/login")
def login():
    email, password = credentials()
    user = gnar.db.one("SELECT id, password_hash FROM users WHERE email = %(email)s", {"email": email})
    if user is None or not gnar.check_password_hash(user.password_hash, password):
        abort(401, description="wrong email or password")
    if gnar.password_needs_rehash(user.password_hash):
        gnar.db.run("UPDATE users SET password_hash = %(hash)s WHERE id = %(id)s",
                    {"hash": gnar.generate_password_hash(password), "id": user.id})
    return jsonify({"access_token": create_access_token(identity=str(user.id))})


@blueprint.get("/me")
@jwt_required()
def me():
    user = gnar.db.one("SELECT id, email FROM users WHERE id = %(id)s", {"id": int(get_jwt_identity())})
    if user is None:
        abort(404, description="no such user")
    return jsonify({"id": user.id, "email": user.email})
