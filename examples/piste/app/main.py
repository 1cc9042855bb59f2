"""piste, the user service: ``python -m piste.app.main`` from examples/.

Its schema is in ``piste/migrations/``: applied at start-up in development,
by ``flask --app piste.app.main gnar migrate`` in production.
"""

import os

from flask_gnar import create_app, serve

app = create_app(
    "piste",
    production=os.environ.get("PISTE_PRODUCTION") == "1",
    port=int(os.environ.get("PISTE_HTTP_PORT", "9400")),
)

if __name__ == "__main__":
    serve(app)
