"""A flask-gnar service for the peer tests: create_app, a JWTManager, serve in production.

SUMMIT_PORT: the port; SUMMIT_JWT_SECRET: the secret shared with its callers.
"""

import os

from flask_jwt_extended import JWTManager

from flask_gnar import create_app, serve

app = create_app(
    "summit",
    production=True,
    port=int(os.environ.get("SUMMIT_PORT", "9500")),
    no_db=True,
    no_jwt=True,
    config={"JWT_SECRET_KEY": os.environ.get("SUMMIT_JWT_SECRET", "summit-secret")},
)
JWTManager(app)

if __name__ == "__main__":
    serve(app, host="127.0.0.1")
