"""The piste service: run it with ``python -m piste.app.main`` from examples/."""

import os

from flask_gnar import create_app, serve

app = create_app(
    "piste",
    production=os.environ.get("PISTE_PRODUCTION") == "1",
    port=int(os.environ.get("PISTE_PORT", "9400")),
    no_db=True,
    no_jwt=True,
)

if __name__ == "__main__":
    serve(app)
