"""piste, the user service: ``python -m piste.app.main`` from examples/."""

import os

from flask_gnar import create_app, gnar, serve

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id serial PRIMARY KEY,
    email text UNIQUE NOT NULL,
    password_hash text NOT NULL
)
"""


app = create_app(
    "piste",
    production=os.environ.get("PISTE_PRODUCTION") == "1",
    port=int(os.environ.get("PISTE_HTTP_PORT", "9400")),
)

with app.app_context():
    gnar.db.run(SCHEMA)

if __name__ == "__main__":
    serve(app)
