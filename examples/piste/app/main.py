"""piste, the user service: ``python -m piste.app.main`` from examples/."""

import os
from importlib.util import find_spec

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
    # traced when flask-gnar[tracing] is installed, unless GNAR_TRACING says otherwise
    config={"GNAR_TRACING": os.environ.get("GNAR_TRACING", str(find_spec("opentelemetry.sdk") is not None))},
)

with app.app_context():
    gnar.db.run(SCHEMA)

if __name__ == "__main__":
    serve(app)
